"""The README and docs/ cannot rot: the README stays short enough for a newcomer, every command
it shows names something that exists, and every relative link in it and in docs/ lands on a
file, and on a heading of that file where it names one."""

from __future__ import annotations

import re
from pathlib import Path

import yaml
from conftest import REPO

README = REPO / "README.md"
PAGES = [README, *sorted((REPO / "docs").glob("*.md"))]
README_MAX_LINES = 300
LINK = re.compile(r"\]\(([^)\s]+)\)")


def _fenced_lines(text: str) -> list[str]:
    """The lines inside the page's fenced code blocks."""
    lines, inside = [], False
    for line in text.splitlines():
        if line.startswith("```"):
            inside = not inside
        elif inside:
            lines.append(line)
    return lines


def _make_targets() -> set[str]:
    makefile = (REPO / "Makefile").read_text()
    phony = re.search(r"^\.PHONY:(.*)$", makefile, re.M).group(1).split()
    defined = set(re.findall(r"^([A-Za-z][\w-]*):", makefile, re.M))
    return set(phony) & defined


def _anchor(heading: str) -> str:
    """A heading's anchor as GitHub renders it."""
    text = heading.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    text = page.read_text()
    fenced = set(_fenced_lines(text))
    return {_anchor(line.lstrip("#")) for line in text.splitlines()
            if line.startswith("#") and line not in fenced}


def test_the_readme_fits_a_newcomers_few_screens():
    lines = README.read_text().count("\n")
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines (at most {README_MAX_LINES})"


def test_every_make_target_the_readme_runs_or_names_exists():
    text = README.read_text()
    commands = [line for line in _fenced_lines(text) if re.match(r"\s*make ", line)]
    assert commands, "no make command in the README's code blocks"
    named = {m.group(1) for line in commands for m in [re.match(r"\s*make ([\w-]+)", line)]}
    named |= set(re.findall(r"`make ([\w-]+)", text))
    missing = named - _make_targets()
    assert not missing, f"the README names make targets the Makefile lacks: {sorted(missing)}"


def test_the_readmes_docker_compose_commands_name_services_of_the_compose_file():
    services = set(yaml.safe_load((REPO / "docker-compose.yaml").read_text())["services"])
    commands = [line.split("#")[0].split("docker compose", 1)[1].split()
                for line in _fenced_lines(README.read_text())
                if re.match(r"\s*(\S+=\S+\s+)*docker compose ", line)]  # a command, maybe after VAR=...
    assert commands, "no docker compose command in the README's code blocks"
    for words in commands:
        assert words[0] in ("up", "down", "logs", "ps", "build"), f"unexpected docker compose {words}"
        named = {w for w in words[1:] if not w.startswith("-")}
        assert named <= services, f"docker compose {' '.join(words)}: no service {sorted(named - services)}"


def test_every_relative_link_in_the_readme_and_docs_lands_on_a_file_and_heading():
    broken = []
    for page in PAGES:
        for target in LINK.findall(page.read_text()):
            if re.match(r"[a-z]+:", target):  # http(s), mailto
                continue
            path, _, anchor = target.partition("#")
            file = (page.parent / path).resolve() if path else page
            if not file.exists():
                broken.append(f"{page.relative_to(REPO)}: {target} (no file)")
            elif anchor and file.suffix == ".md" and anchor not in _anchors(file):
                broken.append(f"{page.relative_to(REPO)}: {target} (no heading #{anchor})")
    assert not broken, "broken links:\n" + "\n".join(broken)


BENCHMARKS = REPO / "docs" / "benchmarks.md"
# What a lab diary's headings say; a report's headings name the benchmark.
DIARY = re.compile(r"\b(morning|afternoon|evening|night|second pass|before|now|latest)\b", re.I)


def test_the_benchmark_report_has_one_current_section_per_benchmark_not_a_diary():
    headings = [line for line in BENCHMARKS.read_text().splitlines() if line.startswith("#")]
    diary = [h for h in headings if DIARY.search(h)]
    assert not diary, f"docs/benchmarks.md headings that narrate runs instead of naming a benchmark: {diary}"
    names = [h for h in headings if h.startswith("## ")]
    assert len(names) == len(set(names)), "docs/benchmarks.md has two sections of the same name"


def test_every_module_that_cites_the_benchmark_report_is_named_in_it():
    """A docstring or comment that says "measured: docs/benchmarks.md" sends its reader there;
    the report must then say something about that module."""
    report = BENCHMARKS.read_text()
    citing = []
    for pattern in ("recommend_task/trainer/**/*.py", "plugins/operators/**/*.py", "plugins/.airflowignore",
                    "recommend_task/Dockerfile"):
        citing += [p for p in REPO.glob(pattern) if "docs/benchmarks.md" in p.read_text()]
    assert citing, "no module cites docs/benchmarks.md (the glob patterns are stale)"
    missing = []
    for path in citing:
        relative = path.relative_to(REPO).as_posix()
        names = {relative, relative.removeprefix("recommend_task/"), relative.removeprefix("plugins/")}
        if not any(f"`{name}" in report or f" {name}" in report for name in names):
            missing.append(relative)
    assert not missing, f"cite docs/benchmarks.md, which never names them: {missing}"
