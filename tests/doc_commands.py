"""Run the command blocks of a Markdown file as a test, exactly as written.

A block is a fenced ```bash (or ```sh / ```shell / ```console) code block. A block may be named by an
HTML comment on the line before its fence (blank lines in between are allowed)::

    <!-- doc-test: train-teacher -->
    ```bash
    .venv/bin/python tools/train_net.py --config-file configs/doclaynet/mask_rcnn_R_101_FPN_3x.yaml \\
        MODEL.WEIGHTS imagenet/R-101.pkl        # ImageNet backbone
    ```

The name ties the block to the test that runs it, so the test holds no second copy of the command;
the marker is invisible in rendered Markdown. A marker may also name a block of another language
(e.g. a Python file the reader is asked to save, which the test then writes as shown). A block's commands are its lines with comment lines and
trailing ``# ...`` comments removed (quotes respected) and backslash continuations joined.
``run_command`` runs one of them through ``bash -c`` with small overrides appended (e.g.
``MODEL.DEVICE cpu SOLVER.MAX_ITER 2``), so a command that changes in the docs and breaks fails the
test. Overrides are appended to the end of the command line: keep documented commands to one program
each (no pipes or ``&&`` chains in a block meant to take overrides).

Typical use::

    blocks = doc_blocks("docs/getting_started.md", named_only=True)
    run_command(blocks["train-teacher"].commands[0], ["SOLVER.MAX_ITER", "1"], cwd=workspace)
"""
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional, Sequence, Union

MARKER = re.compile(r"^\s*<!--\s*doc-test:\s*(?P<name>[\w.\-]+)\s*-->\s*$")
FENCE = re.compile(r"^(?P<indent>\s*)(?P<fence>`{3,}|~{3,})\s*(?P<lang>[\w+\-]*)")
SHELL_LANGS = ("bash", "sh", "shell", "console")


@dataclass
class Command:
    """One command of a block: ``text`` as it runs (continuations joined, comments removed),
    ``path``/``line`` where it starts in the Markdown file, ``block`` the block's name (or None)."""

    text: str
    path: str
    line: int
    block: Optional[str] = None

    def where(self) -> str:
        return f"{self.path}:{self.line}" + (f" (block {self.block!r})" if self.block else "")


@dataclass
class Block:
    """A fenced block: ``name`` from its marker (None without one), ``line`` of its fence
    (1-based), ``source`` its raw text, ``lang`` its fence's language and ``commands`` what runs
    (shell blocks only)."""

    name: Optional[str]
    path: str
    line: int
    source: str
    commands: List[Command] = field(default_factory=list)
    lang: str = "bash"

    @property
    def is_shell(self) -> bool:
        return self.lang in SHELL_LANGS


def strip_comment(line: str) -> str:
    """``line`` without a shell comment: ``#`` at the start of a word, outside quotes."""
    quote = None
    escaped = False
    for i, ch in enumerate(line):
        if escaped:
            escaped = False
        elif ch == "\\" and quote != "'":
            escaped = True
        elif quote:
            if ch == quote:
                quote = None
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i].rstrip()
    return line.rstrip()


def split_commands(source: str, path: str = "<text>", first_line: int = 1,
                   block: Optional[str] = None) -> List[Command]:
    """The commands of a shell block's text: comment-only and blank lines dropped, trailing
    comments removed, lines ending in a backslash joined with the next (as the shell does)."""
    commands: List[Command] = []
    pending: List[str] = []
    start = first_line
    for offset, raw in enumerate(source.splitlines()):
        line = strip_comment(raw)
        if not pending:
            start = first_line + offset
            if not line.strip():
                continue
        if line.endswith("\\") and not line.endswith("\\\\"):
            pending.append(line[:-1].strip())
            continue
        pending.append(line.strip())
        text = " ".join(p for p in pending if p)
        pending = []
        if text:
            commands.append(Command(text, path, start, block))
    if pending:
        raise ValueError(f"{path}:{start}: the block ends inside a backslash continuation")
    return commands


def read_blocks(path: str, every: bool = False) -> List[Block]:
    """Every fenced shell block of the Markdown file ``path`` and every block of another
    language that a marker names, in order; with ``every``, all fenced blocks (``lang`` "" for a
    fence without a language)."""
    with open(path, encoding="utf-8") as f:
        lines = f.read().splitlines()
    blocks: List[Block] = []
    name: Optional[str] = None
    i = 0
    while i < len(lines):
        marker = MARKER.match(lines[i])
        if marker:
            name = marker.group("name")
            i += 1
            continue
        fence = FENCE.match(lines[i])
        if not fence:
            if lines[i].strip():
                name = None  # a marker names only the block right after it
            i += 1
            continue
        close = fence.group("fence")
        body, j = [], i + 1
        while j < len(lines) and not lines[j].strip().startswith(close):
            body.append(lines[j][len(fence.group("indent")):] if lines[j].startswith(fence.group("indent")) else lines[j])
            j += 1
        if j == len(lines):
            raise ValueError(f"{path}:{i + 1}: code fence {close!r} is never closed")
        lang = fence.group("lang").lower()
        source = "\n".join(body)
        if lang in SHELL_LANGS:
            blocks.append(Block(name, path, i + 1, source, split_commands(source, path, i + 2, name), lang))
        elif name is not None or every:
            blocks.append(Block(name, path, i + 1, source + "\n", [], lang))
        name = None
        i = j + 1
    return blocks


def doc_blocks(path: str, named_only: bool = False) -> Union[List[Block], Dict[str, Block]]:
    """``read_blocks(path)``; with ``named_only`` a dict name -> block of the marked blocks (a name
    used twice is an error)."""
    blocks = read_blocks(path)
    if not named_only:
        return blocks
    named: Dict[str, Block] = {}
    for b in blocks:
        if b.name is None:
            continue
        if b.name in named:
            raise ValueError(f"{path}:{b.line}: doc-test name {b.name!r} already used at line {named[b.name].line}")
        named[b.name] = b
    return named


def _tail(text: str, lines: int) -> str:
    parts = (text or "").rstrip().splitlines()
    cut = "" if len(parts) <= lines else f"[... {len(parts) - lines} lines above ...]\n"
    return cut + "\n".join(parts[-lines:])


def run_command(command: Union[Command, str], overrides: Sequence[str] = (), cwd: Optional[str] = None,
                env: Optional[Mapping[str, str]] = None, timeout: Optional[float] = 600,
                check: bool = True, tail: int = 40) -> subprocess.CompletedProcess:
    """Run ``command`` exactly as written, with ``overrides`` appended (each shell-quoted), through
    ``bash -c`` in ``cwd`` with the environment ``os.environ`` updated by ``env``. Returns the
    completed process (stdout and stderr captured as text). With ``check``, a non-zero exit raises
    AssertionError naming the command, where it is written, the folder, and the last ``tail`` lines
    of its output."""
    text = command.text if isinstance(command, Command) else command
    where = command.where() if isinstance(command, Command) else "<string>"
    line = text + "".join(" " + shlex.quote(str(o)) for o in overrides)
    full_env = dict(os.environ)
    full_env.update(env or {})
    try:
        proc = subprocess.run(["bash", "-c", line], cwd=cwd, env=full_env, capture_output=True,
                              text=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        raise AssertionError(f"documented command from {where} timed out after {timeout} s\n"
                             f"  in {cwd or os.getcwd()}: {line}\n--- stdout ---\n"
                             f"{_tail(e.stdout if isinstance(e.stdout, str) else '', tail)}") from None
    if check and proc.returncode != 0:
        raise AssertionError(
            f"documented command from {where} exited with {proc.returncode}\n"
            f"  in {cwd or os.getcwd()}\n  ran: {line}\n"
            f"--- stderr (tail) ---\n{_tail(proc.stderr, tail)}\n"
            f"--- stdout (tail) ---\n{_tail(proc.stdout, tail)}")
    return proc


def make_workspace(path: str, repo: str, links: Sequence[str] = ("configs", "tools", "scripts")) -> str:
    """Make ``path`` a folder where documented commands run as from a clone of ``repo``: symlinks to
    the repository's ``links`` and a ``.venv`` whose ``bin/python`` is the interpreter running the
    tests (so ``.venv/bin/python tools/...`` works and what the commands write stays in ``path``)."""
    os.makedirs(path, exist_ok=True)
    for name in links:
        dst = os.path.join(path, name)
        if not os.path.lexists(dst):
            os.symlink(os.path.join(repo, name), dst)
    venv = os.path.join(path, ".venv")
    if not os.path.lexists(venv):
        if sys.prefix != sys.base_prefix:  # a virtual environment: link it whole
            os.symlink(sys.prefix, venv)
        else:
            os.makedirs(os.path.join(venv, "bin"))
            os.symlink(sys.executable, os.path.join(venv, "bin", "python"))
    return path
