"""The one exception type whose message is meant for the user, not a developer."""


class UserError(Exception):
    """A problem with the user's input, stated in one line with what to do about it.

    Entry points print ``str(err)`` alone (no traceback); inside a sweep it becomes the
    ``error`` of a ``failed`` record.
    """
