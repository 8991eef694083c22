"""The site SuperNode's warm runner: its secret, its address, its supervision."""

import stat
import sys
import threading
import time

from clients.site_supernode import (
    install_short_polls,
    runner_secret,
    runtime_address,
    split_arguments,
    supervise_warm_worker,
    warm_worker_command,
)


def test_fedmed_options_are_taken_and_flowers_are_passed_on():
    # Execute
    ours, rest = split_arguments(
        ["--trusted-apps", "p.txt", "--poll-interval", "0.1", "--port", "9100"]
    )
    # Assert
    assert ours.poll_interval == 0.1 and rest == ["--port", "9100"]
    assert runtime_address(rest) == "127.0.0.1:9100"
    assert runtime_address(["--host", "::1"]) == "[::1]:9094"  # Flower's defaults


def test_the_runner_secret_is_random_and_readable_by_its_owner_only():
    # Execute
    first, second = runner_secret(), runner_secret()
    # Assert
    assert stat.S_IMODE(first.stat().st_mode) == 0o600
    assert stat.S_IMODE(first.parent.stat().st_mode) == 0o700
    assert len(first.read_bytes()) == 32
    assert first.read_bytes() != second.read_bytes()


def test_the_runner_command_names_its_supernode_secret_and_pins(tmp_path):
    # Execute
    command = warm_worker_command("127.0.0.1:9100", tmp_path / "s", tmp_path / "p", 0.2)
    # Assert
    text = " ".join(command)
    assert "-m clients.warm_worker" in text
    assert "--runtime-api-address 127.0.0.1:9100" in text
    assert f"--secret-file {tmp_path / 's'}" in text
    assert f"--trusted-apps {tmp_path / 'p'}" in text


def test_a_runner_that_exits_is_started_again(tmp_path, monkeypatch):
    # Prepare: a "runner" that notes each start and dies at once
    monkeypatch.setattr("clients.site_supernode.RESTART_S", 0.05)
    starts = tmp_path / "starts"
    command = [sys.executable, "-c", f"open({str(starts)!r}, 'a').write('x')"]
    stop = threading.Event()
    # Execute
    thread = supervise_warm_worker(command, stop)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(_read(starts)) < 3:
        time.sleep(0.1)
    stop.set()
    thread.join(timeout=30)
    # Assert
    assert len(_read(starts)) >= 3
    assert not thread.is_alive()


def test_supernode_waits_are_capped_at_the_poll_interval():
    # Prepare
    from flwr.supernode import start_client_internal as node

    saved = node.time, node.pull_objects
    try:
        # Execute
        install_short_polls(0.3)
        started = time.monotonic()
        node.time.sleep(3)  # the idle wait between SuperLink polls
        idle = time.monotonic() - started
        started = time.monotonic()
        node.time.sleep(0.5)  # the wait for the runner's reply, on this machine
        local = time.monotonic() - started
        # Assert
        assert 0.3 <= idle < 1.0 and local < 0.2
        assert node.time.time() > 0
        assert node.pull_objects.keywords["initial_backoff"] == 0.05
        assert node.pull_objects.keywords["max_tries_per_object"] is None
    finally:
        node.time, node.pull_objects = saved


def _read(path) -> str:
    return path.read_text() if path.exists() else ""
