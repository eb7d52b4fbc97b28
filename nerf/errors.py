"""The one error type for bad user input, so that the CLI can print it as a single line."""


class NerfInputError(ValueError):
    """Bad input from a user (a path, a file, an option value). The message is one complete line."""
