"""Errors that carry a message meant for the user: what went wrong and what to do."""


class UserError(Exception):
    """An error caused by input the user can fix; the CLI and the app show its text as is."""


class CheckpointError(UserError):
    """A file that is not a valid SSJDN checkpoint, or one that does not fit this install."""
