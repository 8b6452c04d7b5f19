#!/usr/bin/env python
"""Real unlabeled pages from the Debian TeX Live documentation packages: pick pages of their
PDFs, render them, and write the page list.

    nice -n 10 .venv/bin/python projects/real_pages/tools/collect_pages.py   # after scripts/install_texlive_docs.sh

The packages' files are listed with ``dpkg -L``; every PDF is opened (encrypted, corrupt and
page-less files are listed and skipped), up to ``--pages-per-pdf`` of its portrait pages of a
document size are drawn (a fixed random choice per file, ``--seed``), rendered at ``--dpi`` as PNG
into ``<datasets>/real_pages/texlive/pages/`` and kept unless empty (``dla_kd.data.pages.is_blank``).
Files are visited in a seeded random order (the packages mixed) until ``--max-pages`` pages.

The pages of the study are pinned by the committed list ``projects/real_pages/data/texlive_pages.tsv``
(package, version, PDF path under /usr/share/doc, 0-based page index, sha256 of the PNG):
``--page-list`` renders exactly those pages (the selection arguments are then unused) and checks
each PNG's sha256 (a mismatch, e.g. another pypdfium2 or package version, is listed in
``packages.json`` and the exit status is 1). ``--write-page-list`` writes the journal as such a list.

Written to the output folder (outside git: ``datasets/`` is the datasets root, $DETECTRON2_DATASETS):

- ``pages.jsonl``  the journal, one line per kept page: ``{"file_name" (relative), "package",
  "version", "pdf", "page_index" (0-based), "width", "height", "sha256" (of the PNG)}``;
  a second run renders only what the journal lacks (same arguments), so a killed run resumes.
- ``packages.json`` the packages' versions and installed sizes (``dpkg-query``), the arguments,
  and the skipped files and pages with their reasons.
"""
import argparse
import hashlib
import json
import os
import subprocess
import sys

import numpy as np

from dla_kd.data.builtin import datasets_root
from dla_kd.data.pages import POINTS_PER_INCH, is_blank, open_pdf, render_pdf_page
from dla_kd.utils.files import atomic_write_json, file_sha256

PACKAGES = ("texlive-publishers-doc", "texlive-science-doc", "texlive-latex-recommended-doc")
# Pages kept: portrait, a document's size (A5 .. A3 sides in points): no slides, posters, labels.
MIN_SIDE_PT, MAX_SIDE_PT = 400.0, 1200.0
MIN_ASPECT, MAX_ASPECT = 1.15, 1.6  # height / width (A4 1.41, letter 1.29)


def package_info(package: str) -> dict:
    """Version, installed size (KiB) and PDF files (sorted) of an installed Debian package."""
    try:
        fields = subprocess.run(["dpkg-query", "-W", "-f=${Version}\t${Installed-Size}", package],
                                check=True, capture_output=True, text=True).stdout.split("\t")
        files = subprocess.run(["dpkg", "-L", package], check=True, capture_output=True, text=True).stdout.split("\n")
    except (subprocess.CalledProcessError, FileNotFoundError) as e:
        raise SystemExit(f"error: {package} is not installed ({e}); run projects/real_pages/scripts/install_texlive_docs.sh")
    pdfs = sorted(f for f in files if f.endswith(".pdf") and os.path.isfile(f))
    return {"package": package, "version": fields[0], "installed_size_kib": int(fields[1]), "pdfs": pdfs}


def document_page(size_pt) -> bool:
    w, h = size_pt
    return MIN_SIDE_PT <= min(w, h) and max(w, h) <= MAX_SIDE_PT and MIN_ASPECT <= h / w <= MAX_ASPECT


def pick_pages(pdf_path: str, num_pages: int, k: int, seed: int) -> list:
    """Up to ``k`` page indices of a ``num_pages`` document, the same for the same file name and seed."""
    digest = hashlib.sha256(f"{seed}:{pdf_path}".encode()).digest()
    rng = np.random.default_rng(int.from_bytes(digest[:8], "little"))
    return sorted(int(i) for i in rng.choice(num_pages, size=min(k, num_pages), replace=False))


def load_journal(path: str) -> list:
    records = []
    if os.path.isfile(path):
        with open(path, encoding="utf-8") as f:
            for line in f:
                try:
                    records.append(json.loads(line))
                except ValueError:
                    break  # a line cut short by a kill: rendered again
    return records


DOC_ROOT = "/usr/share/doc"
TSV_FIELDS = ("package", "version", "pdf", "page_index", "sha256")


def read_page_list(path: str) -> list:
    with open(path, encoding="utf-8") as f:
        header = f.readline().rstrip("\n").split("\t")
        if tuple(header) != TSV_FIELDS:
            raise SystemExit(f"error: {path}: expected the columns {TSV_FIELDS}, got {header}")
        rows = [dict(zip(TSV_FIELDS, line.rstrip("\n").split("\t"))) for line in f if line.strip()]
    for row in rows:
        row["pdf"], row["page_index"] = os.path.join(DOC_ROOT, row["pdf"]), int(row["page_index"])
    return rows


def write_page_list(records: list, path: str) -> None:
    lines = ["\t".join(TSV_FIELDS)] + ["\t".join([r["package"], r["version"], os.path.relpath(r["pdf"], DOC_ROOT),
                                                   str(r["page_index"]), r["sha256"]]) for r in records]
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")


def render_page(pdf, pdf_path: str, index: int, dpi: float, output: str):
    """(relative file name, image) of a rendered page, written atomically."""
    image = render_pdf_page(pdf, index, dpi)
    stem = os.path.splitext(os.path.relpath(pdf_path, DOC_ROOT))[0].replace(os.sep, "__")
    rel = os.path.join("pages", f"{stem}__p{index:04d}.png")
    path = os.path.join(output, rel)
    image.save(path + ".tmp", format="PNG", compress_level=6)
    os.replace(path + ".tmp", path)
    return rel, image


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--packages", nargs="+", default=list(PACKAGES))
    parser.add_argument("--output", default=os.path.join(datasets_root(), "real_pages", "texlive"))
    parser.add_argument("--max-pages", type=int, default=3000)
    parser.add_argument("--pages-per-pdf", type=int, default=3)
    parser.add_argument("--dpi", type=float, default=100.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--page-list", metavar="TSV", help="render exactly these pages and check their sha256")
    parser.add_argument("--write-page-list", metavar="TSV", help="write the journal's pages as a page list")
    args = parser.parse_args(argv)

    packages = [package_info(p) for p in args.packages]
    os.makedirs(os.path.join(args.output, "pages"), exist_ok=True)
    journal_path = os.path.join(args.output, "pages.jsonl")
    records = load_journal(journal_path)
    with open(journal_path, "w", encoding="utf-8") as f:  # drop a cut line, keep the complete ones
        f.writelines(json.dumps(r) + "\n" for r in records)
    done = {(r["pdf"], r["page_index"]) for r in records}
    skipped, mismatches = [], []
    if args.page_list:
        versions = {p["package"]: p["version"] for p in packages}
        with open(journal_path, "a", encoding="utf-8") as journal:
            for row in read_page_list(args.page_list):
                if (row["pdf"], row["page_index"]) in done:
                    continue
                if versions.get(row["package"]) != row["version"]:
                    mismatches.append(f"{row['package']}: version {versions.get(row['package'])} here, "
                                      f"{row['version']} in the list")
                pdf = open_pdf(row["pdf"])
                try:
                    rel, image = render_page(pdf, row["pdf"], row["page_index"], args.dpi, args.output)
                finally:
                    pdf.close()
                sha = file_sha256(os.path.join(args.output, rel))
                if sha != row["sha256"]:
                    mismatches.append(f"{rel}: sha256 {sha}, the list has {row['sha256']}")
                journal.write(json.dumps({"file_name": rel, "package": row["package"], "version": row["version"],
                                          "pdf": row["pdf"], "page_index": row["page_index"], "width": image.width,
                                          "height": image.height, "sha256": sha}) + "\n")
                journal.flush()
        records = load_journal(journal_path)
        kept = len(records)
        files, order = [], []
    else:
        files = [(p, pdf) for p in packages for pdf in p["pdfs"]]
        order = np.random.default_rng(args.seed).permutation(len(files))
        kept = len(records)
    with open(journal_path, "a", encoding="utf-8") as journal:
        for n, i in enumerate(order):
            if kept >= args.max_pages:
                break
            package, pdf_path = files[i]
            try:
                pdf = open_pdf(pdf_path)
            except ValueError as e:
                skipped.append({"pdf": pdf_path, "page_index": None, "reason": str(e)})
                continue
            try:
                candidates = [j for j in range(len(pdf)) if document_page(pdf.get_page_size(j))]
                if not candidates:
                    skipped.append({"pdf": pdf_path, "page_index": None, "reason": "no portrait document-size page"})
                for j in pick_pages(pdf_path, len(candidates), args.pages_per_pdf, args.seed):
                    index = candidates[j]
                    if kept >= args.max_pages or (pdf_path, index) in done:
                        continue
                    rel, image = render_page(pdf, pdf_path, index, args.dpi, args.output)
                    path = os.path.join(args.output, rel)
                    if is_blank(np.asarray(image.convert("L"))):
                        os.remove(path)
                        skipped.append({"pdf": pdf_path, "page_index": index, "reason": "empty page"})
                        continue
                    record = {"file_name": rel, "package": package["package"], "version": package["version"],
                              "pdf": pdf_path, "page_index": index, "width": image.width, "height": image.height,
                              "sha256": file_sha256(path)}
                    journal.write(json.dumps(record) + "\n")
                    journal.flush()
                    kept += 1
            except Exception as e:  # a page PDFium cannot render: listed, the run goes on
                skipped.append({"pdf": pdf_path, "page_index": None, "reason": f"{type(e).__name__}: {e}"})
            finally:
                pdf.close()
            if n % 50 == 0:
                print(f"{n}/{len(files)} files, {kept} pages", flush=True)
    summary = {
        "packages": [{k: v for k, v in p.items() if k != "pdfs"} | {"pdf_files": len(p["pdfs"])} for p in packages],
        "args": {k: getattr(args, k) for k in ("max_pages", "pages_per_pdf", "dpi", "seed")},
        "page_filter": {"min_side_pt": MIN_SIDE_PT, "max_side_pt": MAX_SIDE_PT, "aspect": [MIN_ASPECT, MAX_ASPECT]},
        "pages": kept, "skipped": skipped, "page_list": args.page_list, "mismatches": mismatches,
    }
    atomic_write_json(os.path.join(args.output, "packages.json"), summary, indent=1)
    if args.write_page_list:
        write_page_list(load_journal(journal_path), args.write_page_list)
    print(f"{kept} pages in {journal_path}; {len(skipped)} files or pages skipped (packages.json)")
    for m in mismatches:
        print(f"  differs from the page list: {m}", file=sys.stderr)
    return 0 if kept and not mismatches else 1


if __name__ == "__main__":
    sys.exit(main())
