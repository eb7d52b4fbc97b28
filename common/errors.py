"""The one error type for bad user input, so that every entry point can print it as a single line."""


class InputError(ValueError):
    """Bad input from a user (a path, a file, an option value). The message is one complete line that
    names the bad value and what is allowed."""
