"""`make audit`'s own logic (deploy/audit.py), offline.

The audit itself asks a live advisory feed and stays out of `make test` (its verdict would change
by itself). What is tested here is what must never drift: every lock file the repository
installs from is audited, the reviewed ignore file is well-formed, and the verdict over
pip-audit's JSON report (the shape pip-audit 2.10 writes with ``-f json``) fails on what it must.
"""

from __future__ import annotations

import datetime as dt
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "deploy"))
import audit  # noqa: E402 - stdlib-only script

TODAY = dt.date(2026, 12, 1)


def report(*deps: dict) -> dict:
    return {"dependencies": list(deps), "fixes": []}


def dep(name: str, version: str, *vulns: tuple[str, list[str]]) -> dict:
    return {"name": name, "version": version,
            "vulns": [{"id": i, "fix_versions": ["9.9"], "aliases": aliases, "description": ""}
                      for i, aliases in vulns]}


def ignore(id_: str, package: str, expires: dt.date) -> audit.Ignore:
    return audit.Ignore(id_, package, "its affected API is never called here", "reviewer",
                        dt.date(2026, 11, 1), expires)


def test_every_lock_file_the_repository_installs_from_is_audited():
    tracked = subprocess.run(["git", "ls-files", "*.lock"], cwd=REPO, capture_output=True, text=True,
                             check=True).stdout.split()
    assert tracked, "git found no lock file"
    assert sorted(tracked) == sorted(audit.LOCK_FILES)


def test_the_audit_runs_weekly_and_on_lock_changes_outside_the_test_verdict():
    import yaml

    workflow = yaml.safe_load((REPO / ".github" / "workflows" / "audit.yml").read_text())
    triggers = workflow[True]  # YAML 1.1 reads the key `on` as true
    assert triggers["schedule"] and "**/*.lock" in triggers["pull_request"]["paths"]
    assert [s["run"] for s in workflow["jobs"]["make-audit"]["steps"] if "run" in s] == ["make audit"]
    makefile = (REPO / "Makefile").read_text()
    test_target = re.search(r"^test:.*\n((?:\t.*\n)+)", makefile, re.M)
    assert test_target and "audit" not in test_target.group(0)  # never part of make test
    assert "audit" not in (REPO / ".github" / "workflows" / "ci.yml").read_text()


def test_the_reviewed_ignore_file_loads_and_a_malformed_entry_is_an_error_naming_it(tmp_path):
    for entry in audit.load_ignores():
        assert entry.reason.strip() and entry.expires > entry.reviewed_on, entry
    bad = tmp_path / "audit-ignore.toml"
    bad.write_text('[[ignore]]\nid = "GHSA-1"\npackage = "x"\nreason = "r"\n')
    missing = r"missing \['expires', 'reviewed_by', 'reviewed_on'\]"
    with pytest.raises(ValueError, match=rf"entry 1 needs exactly .*{missing}"):
        audit.load_ignores(bad)
    bad.write_text('[[ignore]]\nid = "GHSA-1"\npackage = "x"\nreason = " "\nreviewed_by = "a"\n'
                   'reviewed_on = 2026-11-01\nexpires = 2027-01-01\n')
    with pytest.raises(ValueError, match=r"GHSA-1.*empty reason"):
        audit.load_ignores(bad)


def test_a_vulnerability_fails_the_audit_naming_package_version_advisory_and_fix():
    problems, _ = audit.verdict({"requirements.lock": report(dep("jinja2", "3.1.0", ("GHSA-aaaa", ["CVE-1"])),
                                                               dep("six", "1.17.0"))}, [], TODAY)
    assert problems == ["requirements.lock: jinja2 3.1.0: GHSA-aaaa (CVE-1); fixed in 9.9"]
    assert audit.verdict({"requirements.lock": report(dep("six", "1.17.0"))}, [], TODAY)[0] == []


def test_a_reviewed_ignore_matches_by_id_or_alias_until_it_expires_and_a_stale_one_is_reported():
    reports = {"requirements.lock": report(dep("Jinja2", "3.1.0", ("GHSA-aaaa", ["CVE-1"])))}
    for by in ("GHSA-aaaa", "CVE-1"):
        problems, notes = audit.verdict(reports, [ignore(by, "jinja2", TODAY)], TODAY)
        assert problems == [], by
        assert "1 advisories (1 ignored as reviewed)" in notes[0]
    problems, _ = audit.verdict(reports, [ignore("GHSA-aaaa", "jinja2", TODAY - dt.timedelta(days=1))], TODAY)
    assert problems[0] == "ignore GHSA-aaaa (jinja2) expired on 2026-11-30: review it again or fix"
    assert problems[1].startswith("requirements.lock: Jinja2 3.1.0: GHSA-aaaa")
    # an ignore for another package does not hide this one's advisory
    assert audit.verdict(reports, [ignore("GHSA-aaaa", "markupsafe", TODAY)], TODAY)[0]
    _, notes = audit.verdict({"requirements.lock": report(dep("six", "1.17.0"))},
                             [ignore("GHSA-aaaa", "jinja2", TODAY)], TODAY)
    assert notes[-1].startswith("stale ignore GHSA-aaaa (jinja2)")


def test_packages_the_service_could_not_audit_are_no_clean_result():
    skipped = {"name": "six", "version": "1.17.0",
               "skip_reason": "Dependency not found on PyPI and could not be audited: six (1.17.0)"}
    problems, notes = audit.verdict({"a.lock": report(dep("jinja2", "3.1.6"), skipped)}, [], TODAY)
    assert problems == ["a.lock: 1 packages could not be audited, so this is no clean result: "
                        "Dependency not found on PyPI and could not be audited: six (1.17.0)"]
    assert notes == ["a.lock: 1 packages audited, 1 not auditable, 0 advisories (0 ignored as reviewed)"]
    problems, _ = audit.verdict({"a.lock": report(skipped)}, [], TODAY)
    assert problems[0].startswith("a.lock: the service audited none of its 1 packages")
