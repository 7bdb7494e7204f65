"""What counts as the user's mistake: errors the command line shows as one clear line."""


class ProtoscopeError(ValueError):
    """Bad input or a bad state the user can fix; the CLI prints it as one line, exit status 2.

    The message names what is wrong and, where there is a choice, what is allowed.
    """


class StoreError(ProtoscopeError):
    """A run store that is missing, damaged, busy, or written for another model or config."""
