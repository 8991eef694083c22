"""The fedmed command prints each log line once, third-party chatter quietened."""

import logging

from fedmed.logs import setup_logging


def test_each_line_once_and_chatter_at_warning(capfd):
    # Prepare: Flower's logger carries its own handler
    import sys

    from flwr.supercore import log as flower_log  # noqa: F401

    for handler in logging.getLogger("flwr").handlers:  # bound at import time
        if isinstance(handler, logging.StreamHandler):
            handler.setStream(sys.stderr)
    setup_logging()
    setup_logging()  # idempotent: a second call adds no handler
    # Execute
    logging.getLogger("flwr").info("flower-line")
    logging.getLogger("fedmed.cli").info("fedmed-line")
    logging.getLogger("alembic.runtime.migration").info("alembic-line")
    logging.getLogger("ray").info("ray-line")
    logging.getLogger("mlflow.store").warning("mlflow-warning")
    # Assert
    out = capfd.readouterr()
    text = out.out + out.err
    assert text.count("flower-line") == 1
    assert text.count("fedmed-line") == 1
    assert "alembic-line" not in text and "ray-line" not in text
    assert text.count("mlflow-warning") == 1
