"""advgen's version, read from the installed package's metadata (the one place it is written is pyproject)."""

from importlib import metadata

try:
    __version__ = metadata.version("advgen")
except metadata.PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"
