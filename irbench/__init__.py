"""irbench: a benchmark harness for instance-level image retrieval."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("irbench")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
