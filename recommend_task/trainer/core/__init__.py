"""What every layer may use: the errors a step reports, its self-measurement (profile) and
its "today" (clock). Imports nothing else of the trainer but :mod:`trainer.contract`.
"""
