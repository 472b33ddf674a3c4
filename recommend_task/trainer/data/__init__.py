"""Reading and judging events: date windows, event queries, day statistics and anomaly rules,
the cached window interactions, prediction shards, synthetic events and erasure. Imports
:mod:`trainer.model.model_artifact`, :mod:`trainer.storage` and :mod:`trainer.core`.
"""
