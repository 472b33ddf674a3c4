"""Run Airflow's plugin loader as its processes do, in a fresh interpreter, and report what it
imported: ``python plugin_load.py PLUGINS_FOLDER`` prints one JSON line ``{"seconds",
"from_plugins", "heavy"}``.

Every Airflow service process (dag-processor, scheduler, triggerer...) loads the plugins, and
every task process does when it builds its template context. ``plugins/.airflowignore`` keeps
the loader out of ``plugins/operators``, a package rather than a plugin (used by
``test_dag_integrity.py`` and ``bench_startup.py``). Stdlib only here, besides Airflow.
"""

from __future__ import annotations

import json
import os
import sys
import time

from fresh_parse import HEAVY  # a sibling: this file runs as a script


def main(plugins: str) -> None:
    from airflow import plugins_manager  # Airflow's own import is not counted

    start = time.perf_counter()
    plugins_manager.ensure_plugins_loaded()  # a service process
    try:  # a task process, building its template context (Airflow 3.2+)
        from airflow.sdk.plugins_manager import integrate_macros_plugins
    except ImportError:  # Airflow 3.1's task runner calls the core one
        from airflow.plugins_manager import integrate_macros_plugins
    integrate_macros_plugins()
    seconds = time.perf_counter() - start
    folder = os.path.join(os.path.abspath(plugins), "")
    print(json.dumps({
        "seconds": seconds,
        "from_plugins": sorted(name for name, module in list(sys.modules.items())
                               if (getattr(module, "__file__", None) or "").startswith(folder)),
        "heavy": [name for name in HEAVY if name in sys.modules],
    }))


if __name__ == "__main__":
    main(sys.argv[1])
