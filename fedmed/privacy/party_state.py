"""What a secure-aggregation party remembers between messages (stays on its node).

:class:`fedmed.privacy.party.SecAggParty` keeps all of its state in one
:class:`PartyState`, which converts to flat numpy arrays
(:class:`~fedmed.privacy.messages.WireMessage`), so a Flower node can keep it
in its ``Context.state`` while each message may run in a fresh process. It
holds the party's private key: it never leaves the node.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from fedmed.privacy.messages import WireMessage


@dataclass(frozen=True)
class PartyState(WireMessage):
    """Everything a party must remember between messages (stays on the node)."""

    kinds: ClassVar = {
        "party": "id",
        "private_key": "bytes",
        "min_threshold_fraction": "float",
        "min_parties": "int",
        "run_id": "bytes",
        "threshold": "int",
        "degree": "int",
        "parties": "ids",
        "public_keys": "keys",
        "last_round": "int",
        "pending_round": "int",
        "pending_active": "bytes",
    }
    party: int
    private_key: bytes
    min_threshold_fraction: float
    min_parties: int
    run_id: bytes = b""
    threshold: int = 0
    degree: int = 0
    parties: tuple[int, ...] = ()
    public_keys: tuple[bytes, ...] = ()
    last_round: int = -1
    pending_round: int = -1
    pending_active: bytes = b""
