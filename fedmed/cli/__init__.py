"""The ``fedmed`` command: synthesise data, simulate, report, demo, deploy, bench.

The top floor of the package: each subcommand lives in its own module
(:mod:`fedmed.cli.run`, :mod:`fedmed.cli.data`, :mod:`fedmed.cli.report`,
:mod:`fedmed.cli.deploy`, :mod:`fedmed.cli.site`, :mod:`fedmed.cli.bench`)
and loads what it drives only when it runs, so ``fedmed --help`` stays fast.
"""

from __future__ import annotations

import os
import sys

import typer

from fedmed.cli.bench import bench_app
from fedmed.cli.data import data_app
from fedmed.cli.deploy import certs, deploy_app
from fedmed.cli.export import export
from fedmed.cli.report import report
from fedmed.cli.run import demo, simulate
from fedmed.cli.site import site_app

app = typer.Typer(
    help="Federated fine-tuning of medical-imaging foundation models.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
DEBUG_ENV = "FEDMED_DEBUG"
_debug = {"on": False}  # set by --debug (or FEDMED_DEBUG=1) for this invocation


@app.callback()
def _options(
    debug: bool = typer.Option(
        False, "--debug", help="Show the full traceback of an error."
    ),
) -> None:
    if debug:
        _debug["on"] = True


app.command("certs")(certs)
app.command("simulate")(simulate)
app.command("report")(report)
app.command("demo")(demo)
app.command("export")(export)
app.add_typer(data_app, name="data")
app.add_typer(deploy_app, name="deploy")
app.add_typer(bench_app, name="bench")
app.add_typer(site_app, name="site")


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: errors as one line, tracebacks on ``--debug``.

    A user's mistake (a missing folder, a bad config value, a run that fell
    short) is one line naming what is wrong and what to do; a bug is one line
    too, with its exception type, and ``--debug`` shows either in full.
    """
    from fedmed.logs import setup_logging

    setup_logging()
    _debug["on"] = os.environ.get(DEBUG_ENV) == "1"
    try:
        app(args=argv)
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        sys.exit(130)
    except Exception as err:
        if _debug["on"]:
            raise
        sys.stderr.write(f"error: {one_line(err)}\n")
        sys.exit(1)


def one_line(err: BaseException) -> str:
    """The error as one line: its message, with the type for unexpected kinds."""
    from fedmed.config import ConfigError
    from fedmed.report import RunFailed

    message = " ".join(str(err).split()) or type(err).__name__
    if isinstance(err, KeyError):
        message = str(err.args[0]) if err.args else message
    expected = (ConfigError, RunFailed, OSError, ValueError, KeyError)
    if isinstance(err, expected):
        return message
    return f"{type(err).__name__}: {message} (rerun with --debug for the traceback)"
