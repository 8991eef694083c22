"""``fedmed demo`` calls ``simulate`` with every one of its options set."""

import inspect

from fedmed.cli import run as run_cli


def test_demo_passes_every_simulate_option(monkeypatch, tmp_path):
    # Prepare: record the call instead of simulating
    options = set(inspect.signature(run_cli.simulate).parameters)
    calls = []
    monkeypatch.setattr(run_cli, "simulate", lambda **kwargs: calls.append(kwargs))
    # Execute
    run_cli.demo(out=tmp_path / "demo", data_dir=tmp_path / "data", sites=3, rounds=2)
    # Assert: an option left out would reach simulate as a typer OptionInfo
    (kwargs,) = calls
    assert set(kwargs) == options
    assert kwargs["sites"] == 3 and kwargs["rounds"] == 2 and kwargs["synth"] is True
