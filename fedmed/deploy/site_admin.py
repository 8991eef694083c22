"""Coordinator commands on sites: add, rotate a key, remove, via the Control API.

Each operation changes the SuperLink (``flwr supernode register|unregister``)
and the site register (``fedmed.deploy.registry``) together. The order keeps a
site reachable as long as possible: a rotated site's new key is registered
before its old node is unregistered. These commands reach the SuperLink's
Control API, which the Fleet gate keeps away from sites: run them on the
coordinator.
"""

from __future__ import annotations

import logging
from pathlib import Path

from fedmed.deploy.registration import (
    FlwrRunner,
    RegistrationError,
    json_reply,
    register_key,
)
from fedmed.deploy.registry import RegistryError, SiteRecord, SiteRegistry
from fedmed.deploy.site_keys import (
    check_site_name,
    key_fingerprint,
    read_public_key,
    site_name_of,
)

log = logging.getLogger(__name__)


def _register_new(flwr: FlwrRunner, public_key_file: Path, name: str) -> int:
    node_id = register_key(flwr, public_key_file, name=name)
    if node_id == 0:
        raise RegistrationError(
            f"the SuperLink already knows the key in {public_key_file}, but the "
            f"site register does not: unregister that node ('flwr supernode "
            f"list' / 'unregister') or have the site make a new key"
        )
    return node_id


def add_site(
    flwr: FlwrRunner, registry: SiteRegistry, public_key_file: Path, name: str = ""
) -> SiteRecord:
    """Register a site's public key and record the node id Flower gives it."""
    text = read_public_key(public_key_file)
    name = check_site_name(name) if name else site_name_of(text)
    fingerprint = key_fingerprint(text)
    registry.check_new_key(fingerprint)
    if name in registry.active_names():
        raise RegistryError(
            f"site {name!r} is already registered as node "
            f"{registry.active(name).node_id}; rotate its key instead"
        )
    node_id = _register_new(flwr, public_key_file, name)
    record = registry.add(SiteRecord(name, text, fingerprint, node_id))
    log.info("site %s registered as node %d (%s)", name, node_id, fingerprint)
    return record


def rotate_site(
    flwr: FlwrRunner, registry: SiteRegistry, name: str, public_key_file: Path
) -> tuple[int, int]:
    """Register ``name``'s new key, then retire its old node; (old, new) ids."""
    registry.active(name)
    text = read_public_key(public_key_file)
    fingerprint = key_fingerprint(text)
    registry.check_new_key(fingerprint)
    new_id = _register_new(flwr, public_key_file, name)
    old_id = registry.rotate(name, text, fingerprint, new_id)
    unregister_node(flwr, old_id)
    return old_id, new_id


def remove_site(flwr: FlwrRunner, registry: SiteRegistry, name: str) -> int:
    """Unregister ``name``'s node (it can no longer connect); returns its id."""
    node_id = registry.active(name).node_id
    unregister_node(flwr, node_id)
    registry.remove(name)
    return node_id


def unregister_node(flwr: FlwrRunner, node_id: int) -> None:
    """``flwr supernode unregister``; a node the SuperLink no longer has is fine."""
    reply = json_reply(
        flwr("supernode", "unregister", str(node_id), "--format", "json")
    )
    if not reply.get("success"):
        message = str(reply.get("error-message", reply))
        if "not found" in message.lower():
            log.warning("node %d was not registered at the SuperLink", node_id)
            return
        raise RegistrationError(f"unregistering node {node_id} failed: {message}")
