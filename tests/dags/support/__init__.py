"""Helpers and fakes of the DAG tests (and of the Docker and browser tests and the benchmarks,
which put ``tests/dags`` on their path): imported as ``support.<module>``."""
