"""Site commands: ``fedmed site ...`` (at a hospital), ``fedmed deploy site ...``
(at the coordinator).

A hospital makes its key pair, pins the app hashes it runs and writes its
compose kit; it sends only ``site.pub``. The coordinator registers that public
key at the SuperLink, rotates and removes sites; every change is kept in the
site register next to the SuperLink state.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import typer
from rich.console import Console

site_app = typer.Typer(
    help="At a hospital: make the site's keys, pin trusted apps, write its kit.",
    no_args_is_help=True,
)
sites_app = typer.Typer(
    help="At the coordinator: register, rotate and remove sites.",
    no_args_is_help=True,
)
console = Console()
FOLDER = typer.Option(Path("."), "--folder", help="The site's folder.")
SUPERLINK = typer.Option(
    "127.0.0.1:8000",
    envvar="FEDMED_SUPERLINK",
    help="SuperLink Control API host:port (coordinator only).",
)
CA = typer.Option(Path("certs/ca.crt"), envvar="FEDMED_CA", help="CA certificate.")
STATE = typer.Option(
    Path("state"), envvar="FEDMED_STATE", help="SuperLink state folder (sites.json)."
)


@site_app.command("init")
def init(folder: Path = FOLDER, name: str = typer.Option(..., help="e.g. hospital-a")):
    """Make this site's key pair here; only site.pub is ever sent anywhere."""
    from fedmed.deploy.site_keys import init_site, key_fingerprint, read_public_key

    made = init_site(folder, name)
    text = read_public_key(made.public_key)
    console.print(f"private key {made.key} (mode 0600): never leaves this folder")
    console.print(f"send {made.public_key} to the coordinator; fingerprint:")
    console.print(f"  {key_fingerprint(text)}")


@site_app.command("rotate-key")
def rotate_key(folder: Path = FOLDER):
    """Replace this site's key pair (the old private key is destroyed)."""
    from fedmed.deploy.site_keys import (
        key_fingerprint,
        read_public_key,
        rotate_site_key,
    )

    made = rotate_site_key(folder)
    fingerprint = key_fingerprint(read_public_key(made.public_key))
    console.print(f"new key {fingerprint}: send {made.public_key} to the coordinator")
    console.print("restart the SuperNode once the coordinator has rotated the site")


@site_app.command("trust")
def trust(
    sha256: str = typer.Argument(..., help="FAB hash ('fedmed deploy app-hash')."),
    folder: Path = FOLDER,
    note: str = typer.Option("", help="What this hash is, e.g. 'fedmed 0.1.0'."),
):
    """Allow the app with this hash to run at this site."""
    from fedmed.deploy.app_pin import add_trusted_apps, read_trusted_apps
    from fedmed.deploy.site_keys import SiteFolder

    path = add_trusted_apps(SiteFolder(folder).trusted_apps, [sha256], note)
    console.print(f"{path}: {len(read_trusted_apps(path))} trusted app hash(es)")


@site_app.command("kit")
def kit(
    folder: Path = FOLDER,
    superlink: str = typer.Option(..., help="Coordinator's gate, e.g. host:9092."),
    data: Path = typer.Option(..., help="This site's data folder."),
    site_id: int = typer.Option(..., min=0, help="Site number in the federation."),
    role: str = typer.Option("", help="VFL role (image-provider/knowledge-provider)."),
    gpu: bool = typer.Option(False, help="Reserve one GPU for the SuperNode."),
):
    """Write compose.yml and .env into the site folder."""
    from fedmed.deploy.kit import write_site_kit
    from fedmed.deploy.site_keys import SiteFolder

    compose = write_site_kit(
        SiteFolder(folder.resolve()),
        superlink,
        data,
        site_id,
        role=role or None,
        gpu=gpu,
    )
    console.print(f"wrote {compose}; start it with: docker compose up -d (in {folder})")


@contextmanager
def _flwr(superlink: str, ca: Path) -> Iterator:
    from fedmed.deploy.registration import flwr_runner, write_connection

    with tempfile.TemporaryDirectory(prefix="fedmed-flwr-") as home:
        write_connection(Path(home), superlink, ca)
        yield flwr_runner(Path(home))


def _registry(state: Path):
    from fedmed.deploy.registry import SiteRegistry, registry_path

    return SiteRegistry(registry_path(state))


@sites_app.command("add")
def add(
    public_key: Path = typer.Argument(..., help="The site's site.pub."),
    name: str = typer.Option("", help="Site name (default: the key's comment)."),
    superlink: str = SUPERLINK,
    ca: Path = CA,
    state: Path = STATE,
):
    """Register a site's public key and record its node id."""
    from fedmed.deploy.site_admin import add_site

    with _flwr(superlink, ca) as flwr:
        record = add_site(flwr, _registry(state), public_key, name)
    console.print(f"site {record.name}: node {record.node_id} ({record.fingerprint})")


@sites_app.command("rotate")
def rotate(
    name: str = typer.Argument(...),
    public_key: Path = typer.Argument(..., help="The site's new site.pub."),
    superlink: str = SUPERLINK,
    ca: Path = CA,
    state: Path = STATE,
):
    """Register a site's new key and retire its old node."""
    from fedmed.deploy.site_admin import rotate_site

    with _flwr(superlink, ca) as flwr:
        old, new = rotate_site(flwr, _registry(state), name, public_key)
    console.print(f"site {name}: node {old} retired, now node {new}")


@sites_app.command("remove")
def remove(
    name: str = typer.Argument(...),
    superlink: str = SUPERLINK,
    ca: Path = CA,
    state: Path = STATE,
):
    """Unregister a site: its key no longer connects (kept in the register)."""
    from fedmed.deploy.site_admin import remove_site

    with _flwr(superlink, ca) as flwr:
        node_id = remove_site(flwr, _registry(state), name)
    console.print(f"site {name}: node {node_id} unregistered")


@sites_app.command("list")
def list_sites(state: Path = STATE):
    """The site register: names, node ids, key fingerprints, status."""
    for record in _registry(state).sites.values():
        retired = ", ".join(map(str, record.retired_node_ids)) or "-"
        console.print(
            f"{record.name}: node {record.node_id} {record.status} "
            f"{record.fingerprint} (retired nodes: {retired})"
        )


if __name__ == "__main__":
    site_app()
