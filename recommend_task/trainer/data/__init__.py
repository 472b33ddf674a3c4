"""Reading and judging events: date windows, event queries, day statistics and anomaly rules,
the cached window interactions, prediction shards, synthetic events and erasure. Imports
:mod:`trainer.model`, :mod:`trainer.storage` and :mod:`trainer.core`.
"""
