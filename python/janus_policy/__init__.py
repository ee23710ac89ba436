"""Janus Policy: supervised autonomy for an LLM agent on one Linux host."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("janus-policy")
except PackageNotFoundError:  # running from a source tree
    __version__ = "0.0.0"

__all__ = ["__version__"]
