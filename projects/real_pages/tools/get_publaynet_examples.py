#!/usr/bin/env python
"""The real labelled test set: the 20 example pages of PubLayNet with their COCO annotations,
copied from a clone of https://github.com/ibm-aur-nlp/PubLayNet (its ``examples/``) into
``<datasets>/real_pages/publaynet_examples/`` (outside git) and checked against the manifest
committed beside this script (``projects/real_pages/data/publaynet_examples.json``: the clone's
commit, every file's sha256).

    git clone https://github.com/ibm-aur-nlp/PubLayNet /tmp/PubLayNet     # or any copy of it
    .venv/bin/python projects/real_pages/tools/get_publaynet_examples.py --repo /tmp/PubLayNet

``--repo`` may be a work tree or a bare git directory (files are read with ``git show`` at
``--commit``, default the manifest's). Licence (PubLayNet's LICENSE.md): the annotations belong to
IBM under the Community Data License Agreement - Permissive 1.0; IBM does not own the images, whose
use must abide by the PMC Open Access Subset terms of use (each article its own licence). The
images are therefore not committed to dla-kd; this script fetches them where the study runs.
``--write-manifest`` records a new manifest (after checking the pages by eye).
"""
import argparse
import hashlib
import json
import os
import subprocess
import sys

from dla_kd.data.builtin import datasets_root
from dla_kd.utils.files import atomic_write_json

HERE = os.path.dirname(os.path.abspath(__file__))
MANIFEST = os.path.join(HERE, "..", "data", "publaynet_examples.json")
ANNOTATIONS = "examples/samples.json"
LICENCE = ("annotations: IBM, Community Data License Agreement - Permissive 1.0; images: PubMed Central Open Access "
           "Subset (commercial use collection), terms of use https://www.ncbi.nlm.nih.gov/pmc/tools/openftlist/ "
           "(PubLayNet LICENSE.md)")


def read_blob(repo: str, commit: str, path: str) -> bytes:
    try:
        return subprocess.run(["git", "--git-dir" if not os.path.isdir(os.path.join(repo, ".git")) else "-C", repo,
                               "show", f"{commit}:{path}"], check=True, capture_output=True).stdout
    except subprocess.CalledProcessError as e:
        raise SystemExit(f"error: cannot read {path} at {commit} from {repo}: {e.stderr.decode().strip()}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repo", required=True, help="a clone of ibm-aur-nlp/PubLayNet (work tree or git dir)")
    parser.add_argument("--commit", default=None, help="default: the manifest's commit")
    parser.add_argument("--output", default=os.path.join(datasets_root(), "real_pages", "publaynet_examples"))
    parser.add_argument("--write-manifest", action="store_true", help="record the files read as the new manifest")
    args = parser.parse_args(argv)

    manifest = None
    if os.path.isfile(MANIFEST) and not args.write_manifest:
        with open(MANIFEST) as f:
            manifest = json.load(f)
    commit = args.commit or (manifest["commit"] if manifest else "HEAD")
    data = read_blob(args.repo, commit, ANNOTATIONS)
    coco = json.loads(data)
    files = {"annotations.json": hashlib.sha256(data).hexdigest()}
    os.makedirs(os.path.join(args.output, "images"), exist_ok=True)
    for image in coco["images"]:
        blob = read_blob(args.repo, commit, f"examples/{image['file_name']}")
        files[f"images/{image['file_name']}"] = hashlib.sha256(blob).hexdigest()
        with open(os.path.join(args.output, "images", image["file_name"]), "wb") as f:
            f.write(blob)
    if manifest is not None and manifest["files"] != files:
        wrong = sorted(k for k in set(files) | set(manifest["files"]) if files.get(k) != manifest["files"].get(k))
        raise SystemExit(f"error: {args.repo} at {commit} differs from {MANIFEST}: {wrong}")
    coco["info"] = {"description": "PubLayNet examples/ (20 pages), the real test set of projects/real_pages",
                    "source": f"https://github.com/ibm-aur-nlp/PubLayNet/tree/{commit}/examples", "licence": LICENCE}
    atomic_write_json(os.path.join(args.output, "annotations.json"), coco)
    with open(os.path.join(args.output, "LICENCE.txt"), "w") as f:
        f.write(LICENCE + "\n")
    if args.write_manifest:
        resolved = subprocess.run(["git", "--git-dir" if not os.path.isdir(os.path.join(args.repo, ".git")) else "-C",
                                   args.repo, "rev-parse", commit], check=True, capture_output=True, text=True).stdout.strip()
        os.makedirs(os.path.dirname(MANIFEST), exist_ok=True)
        atomic_write_json(MANIFEST, {"repo": "https://github.com/ibm-aur-nlp/PubLayNet", "commit": resolved,
                                     "licence": LICENCE, "files": files}, indent=1)
    print(f"{len(coco['images'])} pages, {len(coco['annotations'])} annotations in {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
