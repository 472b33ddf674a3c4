"""The model's math and artifacts: id maps, interaction matrices, the ALS model artifact and
exact top-k. Imports :mod:`trainer.storage` and :mod:`trainer.core`.
"""
