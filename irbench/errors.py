"""Expected failures: each carries a message a person can act on (the CLI prints it, no traceback)."""

from __future__ import annotations


class IrbenchError(Exception):
    """Base class of every expected failure; the CLI prints its message and exits with code 2."""


class UnknownNameError(IrbenchError, KeyError):
    """A method, dataset or backend name that is not registered."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class DuplicateNameError(IrbenchError):
    """Two registrations under one name."""


class ConfigError(IrbenchError, ValueError):
    """A bad configuration value or override (`--set`, `--sweep`)."""


class DatasetError(IrbenchError):
    """A dataset that is missing, incomplete, or whose files do not parse."""


class ImageReadError(IrbenchError):
    """An image file that is missing or cannot be decoded."""

    def __init__(self, path: object, problem: str) -> None:
        super().__init__(f"cannot read image {path}: {problem}")
        self.path = path
        self.problem = problem

    def __reduce__(self):  # survive the trip back from a worker process
        return (type(self), (self.path, self.problem))
