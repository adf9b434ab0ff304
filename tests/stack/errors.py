"""Errors raised by the test stack helpers."""


class StackError(RuntimeError):
    """The stack could not be built, started or driven; the message says why."""
