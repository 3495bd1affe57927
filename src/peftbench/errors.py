"""The one exception type for user mistakes: the CLI prints its message on one line and exits 2."""


class UserError(Exception):
    """A mistake in a suite, a flag, a data file or a model/method choice; the message names the fix."""
