"""Where things are kept: the Google Cloud clients (or emulators), the artifact store and its
layout, the published-model pointer, BigQuery helpers, table schemas, partition swaps and
retention. Imports :mod:`trainer.core` only.
"""
