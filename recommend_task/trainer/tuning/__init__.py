"""Per-run hyper-parameter search for the ALS model (``train_task --tune``).

:mod:`.settings` is the search space, :mod:`.validation_split` carves the time-ordered
validation from a run's matrices, :mod:`.successive_halving` runs the trials and
:mod:`.schedule` decides when to search and which earlier settings a run reuses.
"""
