#!/usr/bin/env bash
# Set up dla-kd on a fresh machine: .venv with CPython 3.10, pinned torch/Detectron2, then dla-kd itself.
# Every package gets the exact version of constraints.txt (refresh: scripts/freeze_constraints.py).
# Re-running on a ready machine checks the pins and constraints and changes nothing.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}
# Find a CPython 3.10 that actually runs (a pyenv shim can exist without 3.10 selected).
find_python310() {
  local cand
  for cand in "${PYTHON:-}" python3.10 "$HOME"/.pyenv/versions/3.10*/bin/python3.10 \
              /usr/local/bin/python3.10 /usr/bin/python3.10; do
    [ -n "$cand" ] || continue
    if "$cand" -c 'import sys; assert sys.version_info[:2] == (3, 10)' >/dev/null 2>&1; then
      "$cand" -c 'import sys; print(sys.executable)'; return 0
    fi
  done
  if command -v pyenv >/dev/null 2>&1; then
    cand=$(pyenv root)/versions/$(pyenv versions --bare | grep -E '^3\.10(\.|$)' | tail -1)/bin/python3.10
    if [ -x "$cand" ]; then echo "$cand"; return 0; fi
  fi
  return 1
}
if ! PY=$(find_python310); then
  echo "error: no working CPython 3.10 found (sal-detectron2==0.7.2 ships a cp310 wheel only)." >&2
  echo "       Install it (e.g. 'pyenv install 3.10') or set PYTHON=/path/to/python3.10." >&2
  exit 1
fi

if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating $VENV with $PY"
  "$PY" -m venv "$VENV"
fi

# Fast path: every requirement is installed at a version its pin and constraints.txt allow (a
# constrained package that is not installed, e.g. a platform-specific one, is not needed here)
# and dla-kd is importable.
if "$VENV/bin/python" - <<'PYEOF' 2>/dev/null
import importlib.metadata as md, sys
from packaging.requirements import Requirement
for path, required in (("requirements.txt", True), ("constraints.txt", False)):
    for line in open(path):
        line = line.split("#")[0].strip()
        if not line:
            continue
        req = Requirement(line)
        try:
            v = md.version(req.name)
        except md.PackageNotFoundError:
            if required:
                sys.exit(1)
            continue
        if req.specifier and not req.specifier.contains(v, prereleases=True):
            sys.exit(1)
import dla_kd  # noqa: F401  (editable install present)
PYEOF
then
  echo "[setup] $VENV is ready (pins and constraints satisfied, dla_kd importable); nothing to do."
  exit 0
fi

echo "[setup] installing pinned requirements (torch 2.3.1 + Detectron2 wheel, ~5 GB, a few minutes)"
"$VENV/bin/python" -m pip install -q --upgrade "pip<25" "setuptools<75" wheel packaging
"$VENV/bin/python" -m pip install -q -r requirements.txt -c constraints.txt
echo "[setup] installing dla-kd (editable)"
"$VENV/bin/python" -m pip install -q --no-deps --no-build-isolation -e .
"$VENV/bin/python" -c "import detectron2, torch; from detectron2 import _C; import dla_kd; print('[setup] ok: torch', torch.__version__, 'detectron2', detectron2.__version__)"
