"""Node side of secure aggregation: the party steps every fedmed protocol shares.

Whatever a protocol sums (VFL-CLIP's gradients, a horizontal run's adapter
updates), the key setup and the unmask step are the same, so both register
these handlers under their own action names (:class:`PartyActions`)::

    train.<prefix>_keys     -> KeyAdvertisement (a fresh party for the run)
    train.<prefix>_shares   KeyDirectory        -> SetupShares (encrypted)
    train.<prefix>_ready    SetupSharesDelivery -> acknowledgement
    train.<prefix>_unmask   UnmaskRequest       -> UnmaskResponse

Only the masking step, which computes the vector, is the protocol's own.
The party (private keys included) lives in the node's ``Context.state``
between messages, since each message may run in a fresh process; it never
leaves the node. Action names, keys and message codecs are
:mod:`fedmed.wire.secagg`'s, shared with the server's channels.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flwr.app import Context, Message, RecordDict

from clients.site import Work
from fedmed.config import PlatformConfig
from fedmed.privacy import SecAggParty
from fedmed.privacy.messages import (
    KeyDirectory,
    SetupSharesDelivery,
    UnmaskRequest,
    WireMessage,
)
from fedmed.wire import METRICS, arrays_to_record, metric_record, record_to_arrays
from fedmed.wire.secagg import REPLY, REQUEST, PartyActions, from_record, to_record


def load_party(context: Context, actions: PartyActions) -> SecAggParty:
    """This node's party for the run, as the last message left it."""
    if actions.state_key not in context.state:
        raise RuntimeError(
            "this node has no secure-aggregation state for the run: the key setup "
            f"(train.{actions.action('keys')}) must come first"
        )
    return SecAggParty.from_state(record_to_arrays(context.state[actions.state_key]))


def keep_party(context: Context, actions: PartyActions, party: SecAggParty) -> None:
    """Store the party's state on the node for the next message."""
    context.state[actions.state_key] = arrays_to_record(party.to_state())


def party_step(
    step: Callable[[SecAggParty, Any], WireMessage | None],
    kind: type[WireMessage],
    actions: PartyActions,
) -> Work:
    """A handler running one party step on the request (state kept on the node).

    ``shares``: check the directory, send encrypted mask-key shares;
    ``ready``: keep the peers' shares; ``unmask``: reveal the shares the
    server needs to remove this round's masks.
    """

    def work(msg: Message, context: Context, platform: PlatformConfig) -> RecordDict:
        party = load_party(context, actions)
        reply = step(party, from_record(kind, msg.content[REQUEST]))
        keep_party(context, actions, party)
        if reply is None:
            return RecordDict({METRICS: metric_record({"ready": 1})})
        return RecordDict({REPLY: to_record(reply)})

    return work


def party_actions(
    actions: PartyActions, party_of: Callable[[Context], int]
) -> dict[str, Work]:
    """The shared handlers by action name; ``party_of`` names this node's party."""

    def advertise_keys(
        msg: Message, context: Context, platform: PlatformConfig
    ) -> RecordDict:
        party = SecAggParty(party_of(context))  # fresh keys for this run
        keep_party(context, actions, party)
        return RecordDict({REPLY: to_record(party.advertise())})

    return {
        actions.action("keys"): advertise_keys,
        actions.action("shares"): party_step(
            SecAggParty.receive_directory, KeyDirectory, actions
        ),
        actions.action("ready"): party_step(
            SecAggParty.receive_setup_shares, SetupSharesDelivery, actions
        ),
        actions.action("unmask"): party_step(
            SecAggParty.unmask, UnmaskRequest, actions
        ),
    }
