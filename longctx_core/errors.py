"""Errors that end a stage with a one-line reason (no traceback): bad input the user can fix."""


class LongctxError(RuntimeError):
    """A user-fixable problem (bad data path, model folder that does not load, ...)."""


def error_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type name when empty), for a one-line LongctxError."""
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
