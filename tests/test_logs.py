"""The fedmed command prints each log line once, third-party chatter quietened."""

import logging

from fedmed.logs import setup_logging


def test_each_line_once_and_chatter_at_warning(capfd, monkeypatch):
    # Prepare: a fresh process's loggers: Flower's with its own console handler
    # only (earlier tests in this process may have added others, and pytest's
    # capture handlers sit on the root)
    import sys

    from flwr.supercore.logger import console_handler

    monkeypatch.setattr(logging.getLogger("flwr"), "handlers", [console_handler])
    monkeypatch.setattr(logging.getLogger(), "handlers", [])
    console_handler.setStream(sys.stderr)  # bound at import time
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
