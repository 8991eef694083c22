"""``python -m fedmed.deploy``: the deployment commands without the full fedmed CLI."""

import logging

from fedmed.cli.deploy import certs, deploy_app

deploy_app.command("certs")(certs)

if __name__ == "__main__":
    logging.basicConfig(
        level=logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    deploy_app()
