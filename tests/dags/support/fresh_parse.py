"""Parse DAG files as a fresh DAG-processor child would: Airflow already imported, nothing of
``dags/`` or ``plugins/`` yet, so every import a file makes is paid and counted.

One interpreter imports Airflow once, then forks a child per (runtime, file): the child sets
``RECSYS_RUNTIME``, parses, and reports the parse time, the errors, the DAGs and which heavy
provider modules the parse imported. Forking gives each parse the same fresh module state a new
interpreter would, without paying Airflow's own import (3-7 s on a 2-core machine) a dozen times.

Stdlib only here; the child side runs as ``python fresh_parse.py PLUGINS TESTS JOBS_JSON``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

# Provider modules no parse should import outside their own runtime. The GCS ones are what
# Airflow's asset-URI registry loads to normalise a gs:// asset (operators/dag_defaults.py).
HEAVY = ("airflow.providers.google.cloud.operators.vertex_ai.custom_job",
         "airflow.providers.google.cloud.hooks.vertex_ai.custom_job",
         "airflow.providers.google.cloud.triggers.vertex_ai",
         "airflow.providers.google.cloud.links.vertex_ai",
         "airflow.providers.docker.operators.docker",
         "airflow.providers.docker.hooks.docker",
         "airflow.providers.google.cloud.sensors.gcs",
         "airflow.providers.google.cloud.hooks.gcs",
         "airflow.providers.google.cloud.triggers.gcs",
         "google.cloud.storage")


def parse_in_fresh_children(jobs: list[tuple[str, str, str]], plugins: str, tests: str,
                            env: dict[str, str] | None = None, *, bytecode: bool = False) -> list[dict]:
    """For each ``(runtime, dag_folder_or_file, bundle_path)``: ``{"ms", "errors", "dags",
    "heavy"}`` from a parse in a forked child of one interpreter that imported only Airflow.

    ``bytecode``: the interpreter first byte-compiles ``plugins`` and each bundle (``compileall``
    writes ``__pycache__/`` beside them, as Python does on a first import wherever it may write).
    Without it, where ``PYTHONDONTWRITEBYTECODE`` is set (this machine, many CI systems and
    containers), every parse compiles the project's modules from source."""
    done = subprocess.run([sys.executable, __file__, plugins, tests, json.dumps(jobs),
                           "bytecode" if bytecode else "source"],
                          env=env or os.environ, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"parse probe failed ({done.returncode}):\n"
                           f"{done.stdout[-2000:]}{done.stderr[-2000:]}")
    return [json.loads(line[len("RESULT="):]) for line in done.stdout.splitlines()
            if line.startswith("RESULT=")]


def _child(runtime: str, folder: str, bundle: str, bundle_dagbag_class: type, out: int) -> None:
    os.environ["RECSYS_RUNTIME"] = runtime
    start = time.perf_counter()
    bag = bundle_dagbag_class()(dag_folder=folder, bundle_path=bundle)
    ms = (time.perf_counter() - start) * 1000
    result = {"ms": round(ms), "errors": {str(k): str(v)[-500:] for k, v in bag.import_errors.items()},
              "dags": sorted(bag.dags), "heavy": [m for m in HEAVY if m in sys.modules]}
    os.write(out, json.dumps(result).encode())


def _main(plugins: str, tests: str, jobs_json: str, modules: str) -> None:
    sys.path[:0] = [plugins, tests]
    from support.dagbag_loader import bundle_dagbag_class

    bundle_dagbag_class()  # imports Airflow: the DAG file's cost is what comes after
    jobs = json.loads(jobs_json)
    if modules == "bytecode":
        import compileall

        for folder in sorted({plugins, *(bundle for _, _, bundle in jobs)}):
            if not compileall.compile_dir(folder, quiet=1):
                raise SystemExit(f"could not byte-compile {folder}")
    for runtime, folder, bundle in jobs:
        read, write = os.pipe()
        sys.stdout.flush()
        pid = os.fork()
        if pid == 0:
            os.close(read)
            try:
                _child(runtime, folder, bundle, bundle_dagbag_class, write)
            finally:
                os._exit(0)
        os.close(write)
        with os.fdopen(read, "rb") as pipe:
            payload = pipe.read()
        _, status = os.waitpid(pid, 0)
        if not payload:
            raise SystemExit(f"the parse of {folder} ({runtime}) died: wait status {status}")
        print("RESULT=" + payload.decode(), flush=True)


if __name__ == "__main__":
    _main(*sys.argv[1:5])
