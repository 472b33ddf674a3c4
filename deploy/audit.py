"""`make audit`: pip-audit over every lock file, with a reviewed ignore file.

Kept out of `make test` on purpose: the advisory feed changes by itself, so CI's verdict would
too. Run it before a release, when a lock file changes, and weekly (docs/development.md, "Security audit").

    .venv/audit/bin/python deploy/audit.py [--service pypi|osv] [LOCK ...]

Each lock file is audited as pinned (``--no-deps --disable-pip``: exactly the versions CI and the
images install). The verdict, one line per lock file, then ``audit: ok`` or the reasons:

- a vulnerability not in ``deploy/audit-ignore.toml`` fails the audit, naming package, version,
  advisory and the fixed versions;
- a package the service could not audit fails it too: "nothing found" is not "nothing known"
  when the service had no data (a PyPI mirror without per-version JSON answers "not found" for
  every package);
- an ignore entry past its ``expires`` date is not honoured, and one matching no finding is
  reported as stale, so the file shrinks as fixes land.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
IGNORE_FILE = REPO / "deploy" / "audit-ignore.toml"
# Every lock file the repository installs from; tests/dags/test_audit.py fails on a new one
# that is not listed here.
LOCK_FILES = (
    "requirements.lock",
    "requirements-dev.lock",
    "requirements-airflow-3.1.lock",
    "recommend_task/requirements.lock",
    "recommend_task/requirements-dev.lock",
    "docker/emulators/requirements.lock",
)
IGNORE_FIELDS = {"id", "package", "reason", "reviewed_by", "reviewed_on", "expires"}


@dataclass(frozen=True)
class Ignore:
    """One reviewed exception: why an advisory does not apply to us, until when."""

    id: str
    package: str
    reason: str
    reviewed_by: str
    reviewed_on: dt.date
    expires: dt.date


@dataclass(frozen=True)
class Finding:
    lock: str
    package: str
    version: str
    id: str
    aliases: tuple[str, ...]
    fix_versions: tuple[str, ...]

    def line(self) -> str:
        fixed = ", ".join(self.fix_versions) or "no fixed version yet"
        also = f" ({', '.join(self.aliases)})" if self.aliases else ""
        return f"{self.lock}: {self.package} {self.version}: {self.id}{also}; fixed in {fixed}"


def load_ignores(path: Path = IGNORE_FILE) -> list[Ignore]:
    """The reviewed ignore file; a malformed entry is an error naming it, never skipped."""
    doc = tomllib.loads(path.read_text()) if path.exists() else {}
    unknown = set(doc) - {"ignore"}
    if unknown:
        raise ValueError(f"{path.name}: unknown top-level keys {sorted(unknown)} (only [[ignore]] tables)")
    ignores = []
    for n, entry in enumerate(doc.get("ignore", []), 1):
        fields = set(entry)
        if fields != IGNORE_FIELDS:
            missing, unknown = sorted(IGNORE_FIELDS - fields), sorted(fields - IGNORE_FIELDS)
            raise ValueError(f"{path.name}: entry {n} needs exactly {sorted(IGNORE_FIELDS)}; "
                             f"missing {missing}, unknown {unknown}")
        if not all(isinstance(entry[k], dt.date) for k in ("reviewed_on", "expires")):
            raise ValueError(f"{path.name}: entry {n} ({entry['id']}): reviewed_on and expires must be dates")
        if not str(entry["reason"]).strip():
            raise ValueError(f"{path.name}: entry {n} ({entry['id']}): an empty reason is no review")
        ignores.append(Ignore(**entry))
    return ignores


def findings_and_skips(lock: str, report: dict) -> tuple[list[Finding], list[str]]:
    """pip-audit's JSON report for one lock file: its vulnerabilities, and the packages it
    could not audit (with pip-audit's reason)."""
    findings, skipped = [], []
    for dep in report.get("dependencies", []):
        if "skip_reason" in dep:
            skipped.append(dep["skip_reason"])
            continue
        for vuln in dep.get("vulns", []):
            findings.append(Finding(lock, dep["name"], dep["version"], vuln["id"],
                                    tuple(vuln.get("aliases", [])), tuple(vuln.get("fix_versions", []))))
    return findings, skipped


def verdict(reports: dict[str, dict], ignores: Iterable[Ignore],
            today: dt.date) -> tuple[list[str], list[str]]:
    """(problems, notes) over every lock file's report: an empty problems list passes."""
    ignores = list(ignores)
    honoured = {(i.id, i.package.lower()) for i in ignores if i.expires >= today}
    problems, notes, used = [], [], set()
    for i in ignores:
        if i.expires < today:
            problems.append(f"ignore {i.id} ({i.package}) expired on {i.expires}: review it again or fix")
    for lock, report in reports.items():
        findings, skipped = findings_and_skips(lock, report)
        audited = len(report.get("dependencies", [])) - len(skipped)
        open_ = []
        for f in findings:
            names = {f.id, *f.aliases}
            hit = {(n, f.package.lower()) for n in names} & honoured
            if hit:
                used |= hit
            else:
                open_.append(f)
        notes.append(f"{lock}: {audited} packages audited, {len(skipped)} not auditable, "
                     f"{len(findings)} advisories ({len(findings) - len(open_)} ignored as reviewed)")
        problems += [f.line() for f in open_]
        if skipped and not audited:
            problems.append(f"{lock}: the service audited none of its {len(skipped)} packages "
                            f"({skipped[0]}): it is unreachable or serves no per-version data here; "
                            "try --service osv")
        elif skipped:
            problems.append(f"{lock}: {len(skipped)} packages could not be audited, so this is no "
                            f"clean result: {'; '.join(skipped[:3])}")
    for i in ignores:
        if i.expires >= today and (i.id, i.package.lower()) not in used:
            notes.append(f"stale ignore {i.id} ({i.package}): no lock file has it any more; delete the entry")
    return problems, notes


def pip_audit(lock: Path, service: str) -> dict:
    """One pip-audit run over a pinned lock file; its JSON report. Ignores are matched here,
    not passed to pip-audit, so an entry that matches nothing any more shows as stale."""
    exe = shutil.which("pip-audit", path=str(Path(sys.executable).parent))
    if exe is None:
        raise SystemExit("ERROR: pip-audit not installed in this venv: run `make audit`")
    cmd = [exe, "-r", str(lock), "--no-deps", "--disable-pip", "-s", service,
           "--progress-spinner", "off", "-f", "json"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    # Exit 1 is also "vulnerabilities found", which the verdict handles; no JSON report means
    # pip-audit itself failed (e.g. the service is unreachable): say why in one line.
    try:
        return json.loads(out.stdout)
    except json.JSONDecodeError:
        why = (out.stderr.strip().splitlines() or [f"exit {out.returncode}, no output"])[-1]
        raise SystemExit(f"ERROR: pip-audit failed on {lock.relative_to(REPO)}: {why}") from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--service", choices=("pypi", "osv"), default="pypi",
                        help="vulnerability service pip-audit asks (default: pypi)")
    parser.add_argument("locks", nargs="*", default=list(LOCK_FILES), help="lock files (default: all)")
    args = parser.parse_args(argv)
    try:
        ignores = load_ignores()
    except ValueError as err:
        print(f"ERROR: {err}", file=sys.stderr)
        return 2
    reports = {lock: pip_audit(REPO / lock, args.service) for lock in args.locks}
    problems, notes = verdict(reports, ignores, dt.date.today())
    for line in notes:
        print(line)
    if problems:
        print(f"audit: FAILED ({len(problems)})", file=sys.stderr)
        for line in problems:
            print(f"  {line}", file=sys.stderr)
        return 1
    print(f"audit: ok ({args.service}, {dt.date.today()})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
