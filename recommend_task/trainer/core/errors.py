"""Errors a step reports as one clear line instead of a traceback.

A :class:`TrainerError` is permanent (exit code 2: a retry cannot fix it); a
:class:`TransientError` may pass on a retry (exit code 75). See :mod:`trainer.step.exit_codes`."""


class TrainerError(Exception):
    """Bad input, missing data or a refused action: the message names what is wrong."""


class TransientError(TrainerError):
    """An external service failed or another writer got in the way: a retry may succeed."""


class EmptyWindowError(TrainerError):
    """The requested event window holds no usable events."""


class TooManyBadRowsError(TrainerError):
    """More rows than allowed were dropped as invalid."""


class AnomalyError(TrainerError):
    """The run date's events break an anomaly rule (trainer.data.anomaly_rules): nothing is
    trained on them."""


class ModelNotFoundError(TrainerError):
    """No model artifact (or no published model) where one was expected."""


class VerdictFailedError(TrainerError):
    """The candidate model did not pass evaluation."""


class ValidationError(TrainerError):
    """Staged recommendations failed validation; nothing was published."""


class ConcurrentUpdateError(TransientError):
    """Another writer changed an object between our read and our write."""
