"""User-facing errors: a message that names the file/field/row and the fix, exit status 2."""


class CongError(Exception):
    """Bad input from the user (config, data, models). The CLI prints the message and exits with 2."""

    exit_code = 2
