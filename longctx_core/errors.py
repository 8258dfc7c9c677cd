"""Errors that end a stage with a one-line reason (no traceback): bad input the user can fix."""


class LongctxError(RuntimeError):
    """A user-fixable problem (bad data path, model folder that does not load, ...)."""
