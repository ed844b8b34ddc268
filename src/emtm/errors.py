"""Errors that emtm reports to a user. The CLI prints them without a traceback."""


class EmtmError(Exception):
    """Base class: a problem the user can fix, with a message that says how."""


class DataError(EmtmError):
    """Bad input data: the message names the file (and line or field) and what was expected."""

    def __init__(self, message: str, path: object = None, line: int | None = None):
        where = ""
        if path is not None:
            where = f"{path}"
            if line is not None:
                where += f", line {line}"
            where += ": "
        super().__init__(where + message)
        self.path = path
        self.line = line


class ConfigError(EmtmError):
    """Bad configuration: the message names the key and what was expected."""
