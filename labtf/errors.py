"""User-facing errors: one clear line, no traceback, from the CLI."""


class LabtfError(Exception):
    """A mistake a user can fix: the message says what, where and how."""
