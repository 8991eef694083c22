"""Namespace network: built, shaped and reshaped, cut, and removed without a trace."""

import subprocess
import sys
import time

import pytest

from fedmed.deploy.netns import COORDINATOR, NamespaceNetwork, namespaces_available

NO_NETNS = namespaces_available()  # why namespaces cannot be made, or ""
needs_netns = pytest.mark.skipif(bool(NO_NETNS), reason=NO_NETNS or "namespaces work")


def connects(network, host: str, address: str, port: int) -> bool:
    probe = (
        "import socket,sys; s=socket.socket(); s.settimeout(2); "
        "sys.exit(s.connect_ex((sys.argv[1], int(sys.argv[2]))))"
    )
    command = network.placement(host).wrap(
        [sys.executable, "-c", probe, address, str(port)]
    )
    return subprocess.run(command, check=False, timeout=30).returncode == 0


def test_without_root_the_reason_is_given(monkeypatch):
    # Prepare
    monkeypatch.setattr("os.geteuid", lambda: 1000)
    # Execute / Assert
    assert namespaces_available() == "network namespaces need root (CI runs as root)"


@needs_netns
def test_network_is_shaped_reshaped_cut_and_removed():
    # Prepare
    network = NamespaceNetwork([20, None])
    listener = None
    try:
        network.create()
        coordinator = network.address(COORDINATOR)
        listener = subprocess.Popen(
            network.placement(COORDINATOR).wrap(
                [
                    sys.executable,
                    "-c",
                    "import socket,time; s=socket.socket(); "
                    f"s.bind(('{coordinator}', 5555)); s.listen(); time.sleep(60)",
                ]
            )
        )
        # Execute
        first = network.rate_mbit(0)
        network.shape(0, 50)
        second = network.rate_mbit(0)
        deadline = time.monotonic() + 30  # the listener's interpreter is starting
        while not (reachable := connects(network, "site0", coordinator, 5555)):
            if time.monotonic() > deadline:
                break
            time.sleep(0.2)
        network.cut(0)
        after_cut = connects(network, "site0", coordinator, 5555)
        other_site = connects(network, "site1", coordinator, 5555)
        network.restore(0)
        made = network.existing()
    finally:
        if listener is not None:
            listener.kill()
            listener.wait(timeout=10)
        network.destroy()
    # Assert
    assert (first, second) == (20.0, 50.0)
    assert reachable and not after_cut and other_site
    assert len(made) == 4 and network.existing() == []
