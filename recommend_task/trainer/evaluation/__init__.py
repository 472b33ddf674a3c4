"""Judging models: ranking metrics, the promotion rule, the HTML evaluation report and the
served-day measure. Imports :mod:`trainer.data` and the layers below it.
"""
