"""The coordinator's register of sites: who a Flower node id is, now and before.

Flower knows a site only as a 64-bit node id that changes whenever the site's
key is rotated or the site re-registers. Reports, fault attribution and audits
need the hospital behind an id, also for ids retired since. The register is a
JSON file next to the SuperLink's state database (``sites.json``)::

    {"sites": {"hospital-a": {"public_key": "...", "fingerprint": "SHA256:...",
                              "node_id": 123, "status": "active",
                              "registered_at": "...", "retired_node_ids": [97]}}}

It holds public keys only. ``site_of_node`` is the lookup the server side uses;
``FEDMED_SITE_REGISTRY`` names the file for processes that are not told it.
Writes go to a temporary file that replaces the old one, so a reader never
sees half a register.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

REGISTRY_FILE = "sites.json"
REGISTRY_ENV = "FEDMED_SITE_REGISTRY"
ACTIVE, REMOVED = "active", "removed"


class RegistryError(ValueError):
    """A site operation that contradicts the register (unknown, duplicate, ...)."""


@dataclass
class SiteRecord:
    """One site: its public key and the node ids Flower gave it."""

    name: str
    public_key: str
    fingerprint: str
    node_id: int
    status: str = ACTIVE
    registered_at: str = field(
        default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds")
    )
    retired_node_ids: list[int] = field(default_factory=list)


class SiteRegistry:
    """Read and change ``sites.json``; every change is saved at once."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.sites: dict[str, SiteRecord] = {}
        if self.path.is_file():
            self.sites = _load(self.path)

    def site_of_node(self, node_id: int) -> str | None:
        """The site a node id belongs (or belonged) to; None if never seen."""
        for record in self.sites.values():
            if node_id == record.node_id or node_id in record.retired_node_ids:
                return record.name
        return None

    def active(self, name: str) -> SiteRecord:
        """The active record of ``name``; unknown or removed sites are errors."""
        record = self.sites.get(name)
        if record is None or record.status != ACTIVE:
            known = ", ".join(sorted(self.active_names())) or "none"
            raise RegistryError(f"no active site {name!r} (active sites: {known})")
        return record

    def active_names(self) -> list[str]:
        return [n for n, r in self.sites.items() if r.status == ACTIVE]

    def check_new_key(self, fingerprint: str) -> None:
        """A key may belong to one site only, and a retired key never returns."""
        for record in self.sites.values():
            if record.fingerprint == fingerprint:
                raise RegistryError(
                    f"key {fingerprint} is already the key of site {record.name!r} "
                    f"({record.status}); every site needs its own, new key"
                )

    def add(self, record: SiteRecord) -> SiteRecord:
        """Record a newly registered site (a removed site's name may return)."""
        old = self.sites.get(record.name)
        if old is not None and old.status == ACTIVE:
            raise RegistryError(
                f"site {record.name!r} is already registered as node {old.node_id}; "
                f"rotate its key instead"
            )
        if old is not None:
            record.retired_node_ids = [*old.retired_node_ids, old.node_id]
        self.sites[record.name] = record
        self.save()
        return record

    def rotate(self, name: str, public_key: str, fingerprint: str, node_id: int) -> int:
        """Give ``name`` its new key and node id; returns the retired node id."""
        record = self.active(name)
        old = record.node_id
        record.retired_node_ids.append(old)
        record.public_key, record.fingerprint, record.node_id = (
            public_key,
            fingerprint,
            node_id,
        )
        self.save()
        return old

    def remove(self, name: str) -> int:
        """Mark ``name`` removed (kept for attribution); returns its node id."""
        record = self.active(name)
        record.status = REMOVED
        self.save()
        return record.node_id

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        payload = {"sites": {n: asdict(r) for n, r in sorted(self.sites.items())}}
        tmp = self.path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(payload, indent=2) + "\n")
        os.replace(tmp, self.path)


def _load(path: Path) -> dict[str, SiteRecord]:
    try:
        payload = json.loads(path.read_text())
        return {n: SiteRecord(**r) for n, r in payload["sites"].items()}
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise RegistryError(
            f"{path}: not a fedmed site register ({exc}); restore it from backup "
            f"or rebuild it with 'fedmed deploy site add' for each site"
        ) from exc


def registry_path(state_dir: Path) -> Path:
    """Where the register lives: next to the SuperLink's state database."""
    return Path(state_dir) / REGISTRY_FILE


def site_of_node(node_id: int, registry: Path | None = None) -> str | None:
    """The site behind a Flower node id, for reports and fault attribution.

    ``registry`` defaults to ``$FEDMED_SITE_REGISTRY``. Returns None for a node
    id no site ever had (e.g. a simulation's synthetic nodes).

    Raises:
        FileNotFoundError: no register given, or the file does not exist.
    """
    path = registry or os.environ.get(REGISTRY_ENV)
    if not path or not Path(path).is_file():
        raise FileNotFoundError(
            f"site register {path or '(unset)'} not found: pass its path or set "
            f"{REGISTRY_ENV} (it is '{REGISTRY_FILE}' next to the SuperLink state)"
        )
    return SiteRegistry(Path(path)).site_of_node(int(node_id))
