"""Every relative link of the repository's Markdown files points at a file or folder that exists
(README.md, docs/, datasets/, projects/*/README.md and the results READMEs): a moved or renamed
file fails here instead of leaving a dead link."""
import glob
import os
import re

import pytest

from tiny_models import REPO

LINK = re.compile(r"\]\((?P<target>[^)\s]+)(?:\s+\"[^\"]*\")?\)")
FENCE = re.compile(r"^\s*(`{3,}|~{3,})")


def markdown_files():
    patterns = ["README.md", "docs/*.md", "datasets/*.md", "projects/*/README.md", "projects/*/*/README.md",
                "projects/*/*.md", "projects/*/*/*.md"]
    files = sorted({p for pattern in patterns for p in glob.glob(os.path.join(REPO, pattern))})
    assert files, f"no Markdown files found under {REPO}"
    return files


def relative_links(path):
    """(line number, target) of each relative link outside code blocks, without its #anchor."""
    in_code = False
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if FENCE.match(line):
                in_code = not in_code
                continue
            if in_code:
                continue
            for m in LINK.finditer(line):
                target = m.group("target").split("#", 1)[0]
                if target and not re.match(r"^[a-z][a-z0-9+.\-]*:", target):
                    yield number, target


def test_links_are_found_at_all():
    readme = os.path.join(REPO, "README.md")
    assert len(list(relative_links(readme))) >= 5, "the README's links were not parsed: the link pattern is broken"


@pytest.mark.parametrize("path", markdown_files(), ids=lambda p: os.path.relpath(p, REPO))
def test_relative_links_resolve(path):
    dead = [f"{os.path.relpath(path, REPO)}:{n}: {t}" for n, t in relative_links(path)
            if not os.path.exists(os.path.normpath(os.path.join(os.path.dirname(path), t)))]
    assert not dead, "dead links:\n" + "\n".join(dead)
