"""What secure aggregation carries over Flower: actions, keys and message codecs.

Every fedmed protocol that sums masked vectors (VFL-CLIP's gradients, a
horizontal run's adapter updates) runs the same party steps under its own
action names (:class:`PartyActions`)::

    train.<prefix>_keys     KeyRequest -> KeyAdvertisement (once per run)
    train.<prefix>_mask     MaskRequest (+ KeyDirectory until the party has
                            it, + the protocol's input) -> MaskedInput
    train.<prefix>_unmask   UnmaskRequest -> UnmaskResponse

A protocol message travels as an ``ArrayRecord`` of flat numpy arrays under
:data:`REQUEST` (server to node) or :data:`REPLY` (node to server), never
pickled; :func:`from_record` validates it on the way in. The key directory
rides on a party's first round under :data:`DIRECTORY`
(:func:`round_content`).

Horizontal secure FedAvg (``secure-aggregation = true``) trains and masks in
one message, ``train.secagg_fit`` (arrays, config and the round's request):
the site answers with its masked vector under :data:`REPLY`, whether it
accepted its own update under :data:`ACCEPTED` (metrics) and, if not, a
generic :data:`REASON` (config) that carries no numbers. Its evaluation,
``evaluate.secagg_evaluate``, masks the evaluation vector the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar

from flwr.app import ArrayRecord, ConfigRecord, RecordDict

from fedmed.privacy.messages import WireMessage
from fedmed.privacy.server import RoundStart
from fedmed.wire.records import CONFIG, arrays_to_record, record_to_arrays

M = TypeVar("M", bound=WireMessage)

REQUEST, REPLY = "request", "reply"


@dataclass(frozen=True)
class PartyActions:
    """Action names and node-state key of one secure-aggregation protocol."""

    prefix: str
    state_key: str

    def action(self, step: str) -> str:
        """Named action of ``step`` (``keys``, ``shares``, ``ready``, ``mask``...)."""
        return f"{self.prefix}_{step}"


#: Horizontal secure FedAvg: party id = site id.
SITE_PARTY = PartyActions("secagg", "secagg-party")
ACCEPTED, REASON = "accepted", "reason"
#: All a site that rejects its own update tells the server: no counts, norms
#: or tensor names (those stay in the site's own log).
REJECTED = "the site rejected its own update (details in the site's log)"
DIRECTORY = "directory"


def to_record(message: WireMessage) -> ArrayRecord:
    """A protocol message as an ArrayRecord of flat numpy arrays (no pickle)."""
    return arrays_to_record(message.to_arrays())


def from_record(kind: type[M], record: ArrayRecord) -> M:
    """The protocol message ``kind`` back from its ArrayRecord (validated)."""
    return kind.from_arrays(record_to_arrays(record))


def request_content(message: WireMessage, **config: int | str) -> RecordDict:
    """A protocol message (and optional config values) as a request's content."""
    content = RecordDict({REQUEST: to_record(message)})
    if config:
        content[CONFIG] = ConfigRecord(dict(config))
    return content


def round_content(start: RoundStart, **config: int | str) -> RecordDict:
    """What opens a round at a party: its mask request, the directory until it
    has it, and optional config values."""
    content = request_content(start.request, **config)
    if start.directory is not None:
        content[DIRECTORY] = to_record(start.directory)
    return content
