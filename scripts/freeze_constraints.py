#!/usr/bin/env python
"""Write constraints.txt: the exact version of every package that requirements.txt pulls into
this environment (the requirements and their dependencies, recursively; markers evaluated here).

    .venv/bin/python scripts/freeze_constraints.py     # after the test suite passes in .venv

Tools installed by hand (linters, ...) and dla-kd itself are left out: they are not what
``pip install -r requirements.txt -c constraints.txt`` (scripts/setup.sh) installs.
"""
import os
import sys
from importlib import metadata

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def read_requirements(path):
    with open(path) as f:
        return [Requirement(line.split("#")[0].strip()) for line in f if line.split("#")[0].strip()]


def applies(req, extras=("",)):
    return req.marker is None or any(req.marker.evaluate({"extra": e}) for e in extras)


def closure(requirements):
    """{canonical name: installed distribution} of ``requirements`` and their dependencies."""
    found, todo = {}, [r for r in requirements if applies(r)]
    while todo:
        req = todo.pop()
        name = canonicalize_name(req.name)
        if name in found:
            continue
        try:
            dist = metadata.distribution(req.name)
        except metadata.PackageNotFoundError:
            sys.exit(f"error: {req.name} is required but not installed: run scripts/setup.sh first")
        found[name] = dist
        extras = ("",) + tuple(req.extras)
        todo += [r for r in map(Requirement, dist.requires or []) if applies(r, extras)]
    return found


def main():
    found = closure(read_requirements(os.path.join(ROOT, "requirements.txt")))
    lines = [f"{dist.metadata['Name']}=={dist.version}" for _, dist in sorted(found.items())]
    with open(os.path.join(ROOT, "constraints.txt"), "w") as f:
        f.write("# Exact versions of a test-passing install (CPython 3.10, Linux x86_64), used by\n")
        f.write("# scripts/setup.sh as pip's constraints. Refresh: .venv/bin/python scripts/freeze_constraints.py\n")
        f.write("\n".join(lines) + "\n")
    print(f"constraints.txt: {len(lines)} packages")


if __name__ == "__main__":
    main()
