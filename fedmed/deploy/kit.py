"""The per-site kit: what a hospital needs on its own machine to join.

``write_site_kit`` fills the site's folder (``fedmed.deploy.site_keys``) with
``compose.yml`` (one SuperNode, ``fedmed.deploy.compose.site_spec``) and
``.env`` (the coordinator's gate address, the site's number, its data folder).
It refuses a folder that is not ready (no key, no ``ca.crt``) with the step to
take, so ``docker compose up -d`` in that folder is the last step.
"""

from __future__ import annotations

from pathlib import Path

from fedmed.deploy.app_pin import add_trusted_apps
from fedmed.deploy.compose import render_site
from fedmed.deploy.site_keys import SiteFolder, SiteKeyError

KIT_COMPOSE = "compose.yml"
KIT_ENV = ".env"
ROLES = ("image-provider", "knowledge-provider")


def kit_environment(
    superlink: str, data_dir: Path, site_id: int, role: str | None = None
) -> dict[str, str]:
    """The ``.env`` values the site compose file reads."""
    host, _, port = superlink.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(
            f"superlink {superlink!r}: expected the coordinator's gate as HOST:PORT "
            f"(e.g. coordinator.example.org:9092)"
        )
    if role is not None and role not in ROLES:
        raise ValueError(f"role {role!r}: expected one of {', '.join(ROLES)}")
    return {
        "FEDMED_SUPERLINK": superlink,
        "FEDMED_SITE_ID": str(site_id),
        "FEDMED_SITE_DATA": str(Path(data_dir).resolve()),
        "FEDMED_SITE_DIR": ".",
        "FEDMED_SITE_ROLE": f'role="{role}"' if role else "",
    }


def write_site_kit(
    folder: SiteFolder,
    superlink: str,
    data_dir: Path,
    site_id: int,
    *,
    role: str | None = None,
    gpu: bool = False,
) -> Path:
    """Write ``compose.yml`` and ``.env`` into the site folder; returns the compose.

    Raises:
        SiteKeyError: the folder has no key pair or no CA certificate yet.
        FileNotFoundError: ``data_dir`` does not exist.
    """
    if not folder.key.is_file():
        raise SiteKeyError(
            f"{folder.key} not found: run 'fedmed site init --folder {folder.root}' "
            f"first (on this machine)"
        )
    if not folder.ca_cert.is_file():
        raise SiteKeyError(
            f"{folder.ca_cert} not found: copy the coordinator's ca.crt there "
            f"(it is public; compare its fingerprint with the coordinator's)"
        )
    if not Path(data_dir).is_dir():
        raise FileNotFoundError(f"data folder {data_dir} not found")
    if not folder.trusted_apps.is_file():
        add_trusted_apps(folder.trusted_apps, [])  # trusts nothing until reviewed
    env = kit_environment(superlink, data_dir, site_id, role)
    (folder.root / KIT_ENV).write_text(
        "".join(f"{key}={_quote(value)}\n" for key, value in env.items())
    )
    compose = folder.root / KIT_COMPOSE
    compose.write_text(render_site(gpu))
    return compose


def _quote(value: str) -> str:
    """A .env value compose reads back unchanged (single quotes: no expansion)."""
    return f"'{value}'" if any(c in value for c in " \"'$#") else value
