"""The runnable-docs helper (tests/doc_commands.py): extraction of command blocks and how they run."""
import pytest

from doc_commands import doc_blocks, read_blocks, run_command, split_commands, strip_comment

MARKDOWN = """# Title

```bash
# a comment line
echo one   # trailing comment
```

<!-- doc-test: train -->

```bash
.venv/bin/python tools/train_net.py --config-file a.yaml \\
    MODEL.WEIGHTS "w #1.pkl" \\
    OUTPUT_DIR out   # where it goes
echo 'a # b'
```

```python
print("not a shell block")
```

<!-- doc-test: other -->
```sh
ls
```
"""


def test_blocks_commands_and_markers(tmp_path):
    path = tmp_path / "doc.md"
    path.write_text(MARKDOWN)
    blocks = read_blocks(str(path))
    assert [b.name for b in blocks] == [None, "train", "other"]
    assert [c.text for c in blocks[0].commands] == ["echo one"]
    train = blocks[1]
    assert [c.text for c in train.commands] == [
        '.venv/bin/python tools/train_net.py --config-file a.yaml MODEL.WEIGHTS "w #1.pkl" OUTPUT_DIR out',
        "echo 'a # b'",
    ]
    assert train.line == 10 and train.commands[0].line == 11 and train.commands[1].line == 14
    named = doc_blocks(str(path), named_only=True)
    assert sorted(named) == ["other", "train"]
    assert named["other"].commands[0].text == "ls"


def test_marker_names_the_next_block(tmp_path):
    path = tmp_path / "doc.md"
    path.write_text("<!-- doc-test: x.py -->\n```python\npass  # kept\n```\n```python\nnot named\n```\n")
    [block] = read_blocks(str(path))
    assert (block.name, block.lang, block.is_shell, block.source, block.commands) == ("x.py", "python", False, "pass  # kept\n", [])
    path.write_text("```python\nx = 1\n```\n```\nls\n```\n")  # every=True: also unnamed and untyped fences
    assert [(b.name, b.lang, b.source) for b in read_blocks(str(path), every=True)] == [
        (None, "python", "x = 1\n"), (None, "", "ls\n")]
    assert read_blocks(str(path)) == []
    path.write_text("<!-- doc-test: x -->\ntext between\n```bash\nls\n```\n")
    assert read_blocks(str(path))[0].name is None
    path.write_text("<!-- doc-test: x -->\n```bash\nls\n```\n<!-- doc-test: x -->\n```bash\npwd\n```\n")
    with pytest.raises(ValueError, match="already used"):
        doc_blocks(str(path), named_only=True)


def test_strip_comment_and_continuations():
    assert strip_comment("a b#c  # d") == "a b#c"
    assert strip_comment('x "# not" \'# not\' # yes') == 'x "# not" \'# not\''
    with pytest.raises(ValueError, match="continuation"):
        split_commands("echo a \\\n")


def test_run_command_appends_overrides_and_reports_failures(tmp_path):
    proc = run_command("printf '%s|' first", ["SOLVER.MAX_ITER", "2", "a b"], cwd=str(tmp_path))
    assert proc.stdout == "first|SOLVER.MAX_ITER|2|a b|"
    path = tmp_path / "doc.md"
    path.write_text("<!-- doc-test: bad -->\n```bash\necho to-stdout; echo to-stderr >&2; exit 3\n```\n")
    command = doc_blocks(str(path), named_only=True)["bad"].commands[0]
    with pytest.raises(AssertionError) as e:
        run_command(command, cwd=str(tmp_path))
    message = str(e.value)
    assert "exited with 3" in message and f"{path}:3" in message and "'bad'" in message
    assert "to-stderr" in message and "to-stdout" in message
