"""`python -m advgen` (and `torchrun -m advgen`) run the command line."""

from .cli import run

run()
