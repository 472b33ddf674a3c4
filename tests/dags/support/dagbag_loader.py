"""Parse ``dags/`` as the DAG processor does, on every supported Airflow (3.1 to 3.3).

Stdlib and Airflow only: the parse-time probes import it in a fresh interpreter too.
"""

from __future__ import annotations

from pathlib import Path


def bundle_dagbag_class() -> type:
    """``BundleDagBag`` (puts the bundle on sys.path, as production does) from where this
    Airflow keeps it: ``airflow.dag_processing.dagbag`` from 3.2, ``airflow.models.dagbag`` in 3.1."""
    try:
        from airflow.dag_processing.dagbag import BundleDagBag
    except ImportError:
        from airflow.models.dagbag import BundleDagBag
    return BundleDagBag


def bundle_dagbag(dag_folder: Path | str, bundle_path: Path | str | None = None):
    """Parse ``dag_folder`` (a file or a folder) with ``bundle_path`` on sys.path."""
    return bundle_dagbag_class()(dag_folder=str(dag_folder), bundle_path=str(bundle_path or dag_folder))
