"""Errors a step reports as one clear line (exit code 2) instead of a traceback."""


class TrainerError(Exception):
    """Bad input, missing data or a refused action: the message names what is wrong."""


class EmptyWindowError(TrainerError):
    """The requested event window holds no usable events."""


class TooManyBadRowsError(TrainerError):
    """More rows than allowed were dropped as invalid."""


class ModelNotFoundError(TrainerError):
    """No model artifact (or no published model) where one was expected."""


class VerdictFailedError(TrainerError):
    """The candidate model did not pass evaluation."""


class ValidationError(TrainerError):
    """Staged recommendations failed validation; nothing was published."""


class ConcurrentUpdateError(TrainerError):
    """Another writer changed an object between our read and our write."""
