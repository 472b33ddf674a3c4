"""The supported Airflow range (3.1, Cloud Composer 3's Airflow 3 line, to 3.3) and what a Cloud
Composer environment is asked to install. `make test` runs this suite at both ends of the range."""

from __future__ import annotations

import ast
import importlib.metadata
import json
import os
import pathlib
import re
import subprocess
import sys

from conftest import DAGS, PLUGINS, REPO, TESTS

SUPPORTED = ((3, 1), (3, 3))
# Composer preinstalls the Google provider in every build (its release notes name the version);
# Airflow brings the providers its own packages depend on.
# Composer installs these itself and asks that their versions be left to it (OpenLineage: the
# Dataplex lineage integration).
COMPOSER_PREINSTALLS = {"apache-airflow-providers-google", "apache-airflow-providers-openlineage"}


def _requirements(name: str) -> dict[str, str]:
    """``{distribution: specifier}`` of a requirements file, comments and extras dropped."""
    out = {}
    for line in (REPO / name).read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            match = re.match(r"([A-Za-z0-9_.-]+)(\[[^\]]*\])?\s*(.*)", line)
            out[match.group(1).lower().replace("_", "-")] = match.group(3)
    return out


def _minor(version: str) -> tuple[int, int]:
    major, minor = version.split(".")[:2]
    return int(major), int(minor)


def test_this_airflow_is_inside_the_supported_range_and_both_ends_are_locked():
    import airflow

    assert SUPPORTED[0] <= _minor(airflow.__version__) <= SUPPORTED[1], airflow.__version__
    newest = _requirements("requirements.txt")["apache-airflow"]
    oldest = _requirements("requirements-airflow-3.1.txt")["apache-airflow"]
    assert _minor(newest.removeprefix("==")) == SUPPORTED[1], newest
    assert _minor(oldest.removeprefix("==")) == SUPPORTED[0], oldest
    for lock, pin in (("requirements.lock", newest), ("requirements-airflow-3.1.lock", oldest)):
        assert f"\napache-airflow{pin}\n" in (REPO / lock).read_text(), lock


def _comes_with_airflow() -> set[str]:
    names = set()
    for dist in ("apache-airflow", "apache-airflow-core"):
        for requirement in importlib.metadata.requires(dist) or []:
            if "extra ==" not in requirement:
                names.add(re.match(r"[A-Za-z0-9_.-]+", requirement).group(0).lower())
    return names


def test_the_composer_package_list_never_pins_airflow_or_what_composer_installs_itself():
    wanted = _requirements("requirements-composer.txt")
    owned = _comes_with_airflow() | COMPOSER_PREINSTALLS | {"apache-airflow", "apache-airflow-core"}
    assert "apache-airflow-providers-standard" in owned  # sanity: Airflow's own dependencies were read
    assert not set(wanted) & owned, set(wanted) & owned
    for name, spec in wanted.items():
        assert "==" not in spec and "<" not in spec, f"{name}{spec}: a floor only, Composer upgrades"


PROVIDERS_PROBE = """
import json, pathlib, sys
sys.path[:0] = [sys.argv[1], sys.argv[3]]
from support.dagbag_loader import bundle_dagbag
bag = bundle_dagbag(sys.argv[2])
assert not bag.import_errors, bag.import_errors
import airflow.providers
root = pathlib.Path(airflow.providers.__path__[0])
# Airflow's provider discovery imports every installed provider's package, metadata and asset
# handlers: not something the DAGs use.
discovery = {"__init__.py", "get_provider_info.py", "assets"}
used = set()
for module in list(sys.modules.values()):
    path = pathlib.Path(getattr(module, "__file__", None) or "/")
    for parent in path.parents:
        if parent == root or root not in parent.parents:
            break
        if (parent / "get_provider_info.py").exists():
            if path.relative_to(parent).parts[0] not in discovery:
                used.add("apache-airflow-providers-" + "-".join(parent.relative_to(root).parts))
            break
print("PROVIDERS=" + json.dumps(sorted(used)))
"""


def _providers_imported_when_tasks_run() -> set[str]:
    """Providers that ``plugins/operators`` imports anywhere, inside functions too: the operators
    import what only a running task needs (the Vertex operator, the Slack notifier) when it runs,
    so a parse alone does not see them. The docker runtime's provider is left out: Composer runs
    the vertex runtime."""
    names = set()
    for path in sorted((PLUGINS / "operators").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            module = node.module if isinstance(node, ast.ImportFrom) else None
            if module and module.startswith("airflow.providers.") and ".docker" not in module:
                names.add(_distribution_of(module))
    return names


def _distribution_of(module: str) -> str:
    """``airflow.providers.common.compat.sdk`` -> ``apache-airflow-providers-common-compat``: the
    provider is the package that holds ``get_provider_info.py``."""
    import airflow.providers

    root = pathlib.Path(airflow.providers.__path__[0])
    parts = module.split(".")[2:]
    for depth in range(1, len(parts) + 1):
        if (root.joinpath(*parts[:depth]) / "get_provider_info.py").exists():
            return "apache-airflow-providers-" + "-".join(parts[:depth]).replace("_", "-")
    raise AssertionError(f"{module}: no installed provider holds it")


def test_a_composer_environment_has_every_provider_the_vertex_dags_import():
    """Parse the DAGs as Composer runs them (RECSYS_RUNTIME=vertex), add what their tasks import
    when they run, and check that each provider is installed by Composer or named in
    requirements-composer.txt."""
    out = subprocess.run([sys.executable, "-c", PROVIDERS_PROBE, str(PLUGINS), str(DAGS), TESTS],
                         env={**os.environ, "RECSYS_RUNTIME": "vertex"},
                         capture_output=True, text=True, check=True).stdout
    at_parse = set(json.loads(out.split("PROVIDERS=")[1]))
    # The probe sees what a parse imports (the standard provider: SubprocessHook), and the Google
    # provider is imported only when a task runs (the Vertex operator, the GCS sensor).
    assert "apache-airflow-providers-standard" in at_parse, at_parse
    assert "apache-airflow-providers-google" not in at_parse, at_parse
    used = at_parse | _providers_imported_when_tasks_run()
    assert {"apache-airflow-providers-google", "apache-airflow-providers-slack"} <= used, used
    available = _comes_with_airflow() | COMPOSER_PREINSTALLS | set(_requirements("requirements-composer.txt"))
    assert used <= available, used - available
