"""The tests docs/comparison.md and docs/reliability.md cite, and whether this `make test` run
passed every one of them.

    python tests/cited_tests.py LOG_DIR

LOG_DIR is where tests/run-suites.sh leaves each suite's JUnit report (``NAME.xml``) and the
directory each suite ran in (``suites``: ``NAME DIR`` lines). Exit 1, naming them, if a cited
test was not run, was skipped, or failed in any suite that ran it: the document's proof is
this run's, not an earlier one's. Stdlib only; tests/dags/test_comparison.py imports the parser.
"""

from __future__ import annotations

import re
import sys
import xml.etree.ElementTree as ET
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "comparison.md"
RELIABILITY = REPO / "docs" / "reliability.md"
# The tables whose test citations are the documents' proof: (document, its sections).
CITING = ((DOC, ("Capabilities",)), (RELIABILITY, ("Faults", "Security")))
_TOKEN = re.compile(r"`([^`\n]+)`")
_FILE = re.compile(r"^(?:[\w.-]+/)+[\w.-]+$|^(?:Makefile|docker-compose\.yaml|requirements[\w.-]*\.txt)$")


def table(section: str, doc: Path = DOC) -> list[list[str]]:
    """The rows (cells, stripped) of the first table under the ``## section`` heading."""
    text = doc.read_text()
    start = text.index(f"\n## {section}\n")
    rows = []
    for line in text[start:].splitlines()[2:]:
        if line.startswith("## "):
            break
        if line.startswith("|") and not re.fullmatch(r"\|[-| :]+\|", line):
            rows.append([cell.strip() for cell in line.strip("|").split(" | ")])
    return rows[1:]  # without the header


def citations(cell: str) -> tuple[list[str], list[str]]:
    """(files, test ids ``path::function``) named in backticks in a cell. ``::function`` alone
    is a test of the file the cell named last."""
    files, tests, last = [], [], ""
    for token in _TOKEN.findall(cell):
        if "::" in token:
            path, _, name = token.partition("::")
            last = path or last
            tests.append(f"{last}::{name}")
        elif _FILE.match(token) and not token.startswith(("http", "gs:")):
            files.append(token)
    return files, tests


def cited_tests() -> set[str]:
    """Every test id the capability table and the fault and security matrices cite."""
    return {t for doc, sections in CITING for section in sections for row in table(section, doc)
            for cell in row for t in citations(cell)[1]}


def outcomes(log_dir: Path) -> dict[str, list[str]]:
    """``path::function`` -> the outcome of each of its test cases (parameters apart), over every
    suite's JUnit report."""
    roots = dict(line.split(maxsplit=1) for line in (log_dir / "suites").read_text().splitlines() if line)
    found: dict[str, list[str]] = defaultdict(list)
    for name, root in roots.items():
        report = log_dir / f"{name}.xml"
        if not report.exists():
            continue
        for case in ET.parse(report).iter("testcase"):
            path = (Path(root) / case.get("file", "")).as_posix().removeprefix("./")
            function = case.get("name", "").split("[", 1)[0]
            kinds = {child.tag for child in case} & {"failure", "error", "skipped"}
            found[f"{path}::{function}"].append(next(iter(sorted(kinds)), "passed"))
    return found


def main(argv: list[str]) -> int:
    log_dir = Path(argv[1])
    ran = outcomes(log_dir)
    problems = []
    for test in sorted(cited_tests()):
        results = ran.get(test)
        if not results:
            problems.append(f"{test}: not run")
        elif set(results) != {"passed"}:
            problems.append(f"{test}: {', '.join(sorted(set(results) - {'passed'}))}")
    if problems:
        print(f"ERROR: {len(problems)} test(s) docs/comparison.md or docs/reliability.md cites did not "
              "pass in this run:",
              file=sys.stderr)
        for line in problems:
            print(f"  {line}", file=sys.stderr)
        return 1
    print(f"docs/comparison.md, docs/reliability.md: all {len(cited_tests())} cited tests passed in this run")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
