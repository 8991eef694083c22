"""A multi-host network on one machine: Linux network namespaces, veth, tc HTB.

``NamespaceNetwork`` builds a hub namespace holding a bridge, and one
namespace per host (the coordinator and each site), each joined to the bridge
by a veth pair and given its own address in a private /24. Every site's link
is shaped with an HTB class in both directions (its uplink at the site, its
downlink at the hub end), e.g. 10, 50 or 100 Mbit/s, so a transfer takes the
time it would over a hospital line. ``cut``/``restore`` take a site's link
down and up again, as a pulled cable would.

Nothing is added to the machine's own namespace: the addresses exist only
inside the namespaces made here, so no packet can reach any other network.
Every namespace carries the network's random prefix; ``destroy`` deletes each
one this object made (their veth ends go with them) and is safe to call twice.
Needs root (CI runs as root); ``namespaces_available`` says why not otherwise.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field

from fedmed.deploy.topology import Placement

log = logging.getLogger(__name__)

COORDINATOR = "coord"


class NetnsError(RuntimeError):
    """An ``ip``/``tc`` command failed while building or changing the network."""


def _run(*command: str) -> str:
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise NetnsError(f"{' '.join(command)} failed: {done.stderr.strip()}")
    return done.stdout


def namespaces_available() -> str:
    """Empty if network namespaces can be made here, else the reason they cannot."""
    if os.geteuid() != 0:
        return "network namespaces need root (CI runs as root)"
    probe = f"fmprobe{secrets.token_hex(3)}"
    try:
        _run("ip", "netns", "add", probe)
    except (NetnsError, FileNotFoundError) as exc:
        return f"'ip netns add' is not permitted here: {exc}"
    _run("ip", "netns", "del", probe)
    return ""


@dataclass
class NamespaceNetwork:
    """Coordinator + sites in namespaces on one bridge, links shaped by HTB."""

    site_mbit: Sequence[float | None]  # per site; None = unshaped
    subnet: int = field(default_factory=lambda: 16 + secrets.randbelow(200))
    prefix: str = field(default_factory=lambda: f"fm{secrets.token_hex(2)}")
    made: list[str] = field(default_factory=list, init=False)
    _shaped: set[tuple[str, str]] = field(default_factory=set, init=False)

    # ------------------------------------------------------------- names
    def namespace(self, host: str) -> str:
        return f"{self.prefix}-{host}"

    @property
    def hosts(self) -> list[str]:
        return [COORDINATOR, *(self.site_host(k) for k in range(len(self.site_mbit)))]

    @staticmethod
    def site_host(site_id: int) -> str:
        return f"site{site_id}"

    def address(self, host: str) -> str:
        """The host's address (10.250.<subnet>.<n>; coordinator is .1)."""
        return f"10.250.{self.subnet}.{self.hosts.index(host) + 1}"

    def placement(self, host: str) -> Placement:
        return Placement(("ip", "netns", "exec", self.namespace(host)))

    def _veth(self, host: str) -> tuple[str, str]:
        """(end inside the host, end on the hub); interface names <= 15 chars."""
        index = self.hosts.index(host)
        return f"{self.prefix}h{index}", f"{self.prefix}b{index}"

    # ------------------------------------------------------------- build
    def create(self) -> NamespaceNetwork:
        """Build hub, bridge, hosts and shaped links; on failure undo what was made."""
        try:
            hub = self._add_namespace("hub")
            _run("ip", "-n", hub, "link", "add", "br0", "type", "bridge")
            _run("ip", "-n", hub, "link", "set", "br0", "up")
            for host in self.hosts:
                self._add_host(host, hub)
            for k, mbit in enumerate(self.site_mbit):
                if mbit:
                    self.shape(k, mbit)
        except BaseException:
            self.destroy()
            raise
        return self

    def _add_namespace(self, host: str) -> str:
        name = self.namespace(host)
        _run("ip", "netns", "add", name)
        self.made.append(name)
        _run("ip", "-n", name, "link", "set", "lo", "up")
        return name

    def _add_host(self, host: str, hub: str) -> None:
        name = self._add_namespace(host)
        inner, outer = self._veth(host)
        _run(
            "ip",
            "link",
            "add",
            inner,
            "netns",
            name,
            "type",
            "veth",
            "peer",
            "name",
            outer,
            "netns",
            hub,
        )
        _run("ip", "-n", hub, "link", "set", outer, "master", "br0", "up")
        _run("ip", "-n", name, "addr", "add", f"{self.address(host)}/24", "dev", inner)
        _run("ip", "-n", name, "link", "set", inner, "up")

    def shape(self, site_id: int, mbit: float) -> None:
        """Limit site ``site_id``'s link to ``mbit`` Mbit/s, both directions.

        The first call adds an HTB qdisc with one class; later calls change
        that class's rate (HTB does not support replacing the qdisc).
        """
        host = self.site_host(site_id)
        inner, outer = self._veth(host)
        rate = f"{mbit}mbit"
        for namespace, device in (
            (self.namespace(host), inner),
            (self.namespace("hub"), outer),
        ):
            if (namespace, device) not in self._shaped:
                _run(
                    "tc",
                    "-n",
                    namespace,
                    "qdisc",
                    "add",
                    "dev",
                    device,
                    "root",
                    "handle",
                    "1:",
                    "htb",
                    "default",
                    "10",
                )
                self._shaped.add((namespace, device))
            _run(
                "tc",
                "-n",
                namespace,
                "class",
                "replace",
                "dev",
                device,
                "parent",
                "1:",
                "classid",
                "1:10",
                "htb",
                "rate",
                rate,
                "ceil",
                rate,
            )

    def rate_mbit(self, site_id: int) -> float:
        """The rate of the site's uplink class as tc reports it (Mbit/s)."""
        host = self.site_host(site_id)
        inner, _ = self._veth(host)
        shown = _run("tc", "-n", self.namespace(host), "class", "show", "dev", inner)
        match = re.search(r"rate (\d+(?:\.\d+)?)([KMG]?)bit", shown)
        if not match:
            raise NetnsError(f"no HTB class on {inner}: {shown.strip()}")
        scale = {"": 1e-6, "K": 1e-3, "M": 1.0, "G": 1e3}[match.group(2)]
        return float(match.group(1)) * scale

    def cut(self, site_id: int) -> None:
        """Take the site's link down (its side), like a pulled cable."""
        inner, _ = self._veth(self.site_host(site_id))
        _run(
            "ip",
            "-n",
            self.namespace(self.site_host(site_id)),
            "link",
            "set",
            inner,
            "down",
        )

    def restore(self, site_id: int) -> None:
        inner, _ = self._veth(self.site_host(site_id))
        _run(
            "ip",
            "-n",
            self.namespace(self.site_host(site_id)),
            "link",
            "set",
            inner,
            "up",
        )

    def destroy(self) -> None:
        """Delete every namespace made here (their interfaces go with them)."""
        for name in reversed(self.made):
            done = subprocess.run(
                ["ip", "netns", "del", name],
                capture_output=True,
                text=True,
                check=False,
            )
            if done.returncode != 0 and "No such file" not in done.stderr:
                log.error(
                    "could not delete namespace %s: %s", name, done.stderr.strip()
                )
        self.made.clear()

    def existing(self) -> list[str]:
        """Namespaces with this network's prefix that exist right now."""
        listing = _run("ip", "netns", "list")
        return [
            line.split()[0]
            for line in listing.splitlines()
            if line.startswith(f"{self.prefix}-")
        ]

    def __enter__(self) -> NamespaceNetwork:
        return self.create()

    def __exit__(self, *exc: object) -> None:
        self.destroy()
