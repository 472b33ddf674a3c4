"""The recommendation trainer: one entry point per pipeline step (``python -m trainer.<step>``).

Never imports Airflow: the same package runs in a Vertex AI custom container, a local Docker
container or a plain subprocess, and talks to BigQuery / Cloud Storage (or their emulators)
through :mod:`trainer.storage.clients`.
"""

__version__ = "0.1.0"
