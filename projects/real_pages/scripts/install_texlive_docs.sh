#!/usr/bin/env bash
# Install the Debian TeX Live documentation packages whose PDFs are the study's real unlabeled
# pages, and print their versions and installed sizes. Needs root (or sudo) and apt; not for CI.
#   bash projects/real_pages/scripts/install_texlive_docs.sh
# Re-running on a machine that has them installs nothing and prints the same list.
set -euo pipefail
PACKAGES=(texlive-publishers-doc texlive-science-doc texlive-latex-recommended-doc)
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO=sudo; fi
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
echo "package version installed-size(KiB) pdfs"
for p in "${PACKAGES[@]}"; do
  echo "$(dpkg-query -W -f='${Package} ${Version} ${Installed-Size}' "$p") $(dpkg -L "$p" | grep -c '\.pdf$')"
done
