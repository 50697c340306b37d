"""The `advgen` command: a thin click layer over the Python API.

Bad input ends with one line on stderr and exit code 2; a bug ends with one line and exit code 1
(``advgen --debug ...`` shows its traceback). Under torchrun only rank 0 speaks: the other ranks meet the
same bad input and exit the same way in silence, and report only their own internal errors.
"""

from __future__ import annotations

import os
import sys

import click

from .._version import __version__
from ..run import configure_logging, log
from ..distributed import PeerFailed, env_rank
from ..errors import InputError
from .attack import attack
from .bench import bench
from .evaluate import evaluate
from .report import report
from .augment import augment
from .train import train


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="advgen")
@click.option("--debug", is_flag=True, help="Show full tracebacks on errors.")
def cli(debug: bool) -> None:
    """Find how easily an image classifier is fooled, make data that hardens it, and prove it."""


cli.add_command(train)
cli.add_command(attack)
cli.add_command(bench)
cli.add_command(evaluate)
cli.add_command(report)
cli.add_command(augment)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script; returns (and exits with) the command's exit code."""
    args = sys.argv[1:] if argv is None else list(argv)
    debug = "--debug" in args
    silent = env_rank() != 0
    configure_logging()  # until a command starts its run: rank 0 speaks, the others are silent
    say = log.error

    try:
        rv = cli.main(args=args, prog_name="advgen", standalone_mode=False)
    except click.exceptions.Exit as exc:
        code = exc.exit_code
    except click.UsageError as exc:
        name = exc.ctx.command_path if exc.ctx else "advgen"
        say(f"error: {' '.join(exc.format_message().split())} (see '{name} --help')")
        code = 2
    except InputError as exc:
        if debug and not silent:
            raise
        say(f"error: {exc}")
        code = 2
    except PeerFailed:  # rank 0 failed and reports why
        code = 1
    except (click.Abort, KeyboardInterrupt):
        say("interrupted")
        code = 130
    except click.ClickException as exc:
        say(f"error: {' '.join(exc.format_message().split())}")
        code = exc.exit_code
    except Exception as exc:  # a bug in advgen, not the user's fault
        if debug:
            raise
        where = f"advgen[rank {os.environ.get('RANK')}]" if silent else "advgen"
        click.echo(f"{where}: internal error: {type(exc).__name__}: {exc} (rerun with --debug for details)",
                   err=True)
        code = 1
    else:
        code = rv if isinstance(rv, int) else 0
    return code


def run() -> None:
    sys.exit(main())
