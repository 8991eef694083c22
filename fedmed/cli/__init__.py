"""The ``fedmed`` command: synthesise data, simulate, report, demo, deploy, bench.

The top floor of the package: each subcommand lives in its own module
(:mod:`fedmed.cli.run`, :mod:`fedmed.cli.data`, :mod:`fedmed.cli.report`,
:mod:`fedmed.cli.deploy`, :mod:`fedmed.cli.site`, :mod:`fedmed.cli.bench`)
and loads what it drives only when it runs, so ``fedmed --help`` stays fast.
"""

from __future__ import annotations

import logging

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
app.command("certs")(certs)
app.command("simulate")(simulate)
app.command("report")(report)
app.command("demo")(demo)
app.command("export")(export)
app.add_typer(data_app, name="data")
app.add_typer(deploy_app, name="deploy")
app.add_typer(bench_app, name="bench")
app.add_typer(site_app, name="site")


def main() -> None:
    """Console-script entry point."""
    logging.basicConfig(
        level=logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    app()
