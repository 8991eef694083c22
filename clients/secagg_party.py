"""Node side of secure aggregation: the party steps every fedmed protocol shares.

Whatever a protocol sums (VFL-CLIP's gradients, a horizontal run's adapter
updates), the key setup and the unmask step are the same, so both register
these handlers under their own action names (:class:`PartyActions`)::

    train.<prefix>_keys     KeyRequest    -> KeyAdvertisement (fresh party)
    train.<prefix>_unmask   UnmaskRequest -> UnmaskResponse

The masking step, which computes the vector, is the protocol's own; it
opens the round with :func:`open_round`, which hands the party the key
directory riding on its first round before the codec is sized with
``party.num_parties``. The party (private key included) lives in the node's
``Context.state`` between messages, since each message may run in a fresh
process; it never leaves the node. The party's threshold floor is its own
(default two thirds of its neighbours, never what the server says), and it
refuses rounds with fewer than ``min-sites`` parties.
"""

from __future__ import annotations

from collections.abc import Callable

from flwr.app import Context, Message, RecordDict

from clients.site import Work
from fedmed.config import PlatformConfig
from fedmed.privacy import SecAggParty
from fedmed.privacy.messages import (
    KeyDirectory,
    KeyRequest,
    MaskRequest,
    UnmaskRequest,
)
from fedmed.wire import arrays_to_record, record_to_arrays
from fedmed.wire.secagg import (
    DIRECTORY,
    REPLY,
    REQUEST,
    PartyActions,
    from_record,
    to_record,
)


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


def open_round(party: SecAggParty, content: RecordDict) -> MaskRequest:
    """The round's mask request; the key directory, if it rides along, is checked
    against the party's floor and kept first (it sizes the codec)."""
    if DIRECTORY in content:
        party.receive_directory(from_record(KeyDirectory, content[DIRECTORY]))
    return from_record(MaskRequest, content[REQUEST])


def party_actions(
    actions: PartyActions,
    party_of: Callable[[Context], int],
    min_parties: Callable[[PlatformConfig], int] = lambda platform: 2,
) -> dict[str, Work]:
    """The shared handlers by action name; ``party_of`` names this node's party,
    ``min_parties`` is the fewest parties it accepts in a round."""

    def advertise_keys(
        msg: Message, context: Context, platform: PlatformConfig
    ) -> RecordDict:
        request = from_record(KeyRequest, msg.content[REQUEST])
        party = SecAggParty(  # fresh keys for this run
            party_of(context), min_parties=max(2, min_parties(platform))
        )
        reply = party.advertise(request)
        keep_party(context, actions, party)
        return RecordDict({REPLY: to_record(reply)})

    def unmask(msg: Message, context: Context, platform: PlatformConfig) -> RecordDict:
        party = load_party(context, actions)
        reply = party.unmask(from_record(UnmaskRequest, msg.content[REQUEST]))
        keep_party(context, actions, party)
        return RecordDict({REPLY: to_record(reply)})

    return {actions.action("keys"): advertise_keys, actions.action("unmask"): unmask}
