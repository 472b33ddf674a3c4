"""The recommendation trainer: one entry point per pipeline step (``python -m trainer.<step>``).

The entry points are the only modules at the top, beside :mod:`trainer.contract` (what the
Airflow side and the image agree on). Their libraries live in subpackages by job, in layers a
module may only import downwards: ``core`` < ``storage`` < ``model`` < ``data`` < ``evaluation``
< ``step`` (docs/trainer.md, "Package layout"; tests/test_package_layers.py checks it).

Never imports Airflow: the same package runs in a Vertex AI custom container, a local Docker
container or a plain subprocess, and talks to BigQuery / Cloud Storage (or their emulators)
through :mod:`trainer.storage.clients`.
"""

__version__ = "0.1.0"
