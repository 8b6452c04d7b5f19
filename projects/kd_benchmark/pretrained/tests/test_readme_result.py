"""The study README's result tables are the committed report's (results/report.md, written by
analyze.py), row for row: a number edited by hand or left behind by a rerun fails here."""
from pathlib import Path

STUDY = Path(__file__).resolve().parents[1]


def _section(text: str, heading: str) -> str:
    start = text.index(heading)
    end = text.find("\n## ", start + len(heading))
    return text[start:end if end >= 0 else None]


def test_readme_result_tables_are_the_reports_rows():
    result = _section((STUDY / "README.md").read_text(), "## Result on the test pages")
    rows = [line for line in result.splitlines() if line.startswith("| ") and not line.startswith("| row ")]
    report = set((STUDY / "results" / "report.md").read_text().splitlines())
    assert len(rows) >= 12, "the README's result section lost its tables"
    assert [row for row in rows if row not in report] == []
