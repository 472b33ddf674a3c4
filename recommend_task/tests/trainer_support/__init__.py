"""Test support for the trainer suite: seeding and reading back from the emulators (helpers), and
the erased-id scanner (id_scan). Not tests themselves; the DAG tests import them too."""
