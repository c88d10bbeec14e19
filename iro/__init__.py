"""IRO: align a frozen LLM with learned per-token value functions."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("iro-align")
except PackageNotFoundError:  # imported from a source tree that was never installed
    __version__ = "0+unknown"
