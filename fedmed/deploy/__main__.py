"""``python -m fedmed.deploy``: the deployment commands without the full fedmed CLI."""

from fedmed.cli.deploy import certs, deploy_app
from fedmed.logs import setup_logging

deploy_app.command("certs")(certs)

if __name__ == "__main__":
    setup_logging()
    deploy_app()
