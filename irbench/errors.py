"""Expected failures: each carries a message a person can act on (the CLI prints it, no traceback)."""

from __future__ import annotations

from collections.abc import Iterable


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


class BadImagesError(ImageReadError):
    """Image files that are missing or cannot be decoded, all reported together (an
    `ImageReadError` whose `path` and `problem` are the first file's)."""

    MAX_LISTED = 20

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        self.problems = [(str(p), str(q)) for p, q in problems]
        n = len(self.problems)
        lines = [f"  {p}: {q}" for p, q in self.problems[:self.MAX_LISTED]]
        if n > self.MAX_LISTED:
            lines.append(f"  ... and {n - self.MAX_LISTED} more")
        noun = "image cannot" if n == 1 else "images cannot"
        self.path, self.problem = self.problems[0] if self.problems else ("", "")
        IrbenchError.__init__(self, f"{n} {noun} be read:\n" + "\n".join(lines))

    def __reduce__(self):  # survive the trip back from a worker process
        return (type(self), (self.problems,))

    @classmethod
    def combine(cls, errors: Iterable[ImageReadError]) -> BadImagesError:
        """One error listing the problems of any mix of ImageReadError and BadImagesError
        (each file once, in the order first seen)."""
        problems: dict[str, str] = {}
        for err in errors:
            items = err.problems if isinstance(err, BadImagesError) else [(err.path, err.problem)]
            for path, problem in items:
                problems.setdefault(str(path), str(problem))
        return cls(list(problems.items()))
