"""What secure aggregation carries over Flower: actions, keys and message codecs.

Every fedmed protocol that sums masked vectors (VFL-CLIP's gradients, a
horizontal run's adapter updates) runs the same party steps under its own
action names (:class:`PartyActions`)::

    train.<prefix>_keys     -> KeyAdvertisement (a fresh party for the run)
    train.<prefix>_shares   KeyDirectory        -> SetupShares (encrypted)
    train.<prefix>_ready    SetupSharesDelivery -> acknowledgement
    train.<prefix>_mask     MaskRequest (+ the protocol's input) -> MaskedInput
    train.<prefix>_unmask   UnmaskRequest       -> UnmaskResponse

A protocol message travels as an ``ArrayRecord`` of flat numpy arrays under
:data:`REQUEST` (server to node) or :data:`REPLY` (node to server), never
pickled; :func:`from_record` validates it on the way in.

Horizontal secure FedAvg (``secure-aggregation = true``) adds the site's
answer to ``train.secagg_fit``: :data:`ACCEPTED` (metrics) and
:data:`REASON` / :data:`METRIC_NAMES` (config), and the server's
:data:`UPDATE_SIZE` / :data:`METRIC_NAMES` in the mask request's config.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar

from flwr.app import ArrayRecord, ConfigRecord, RecordDict

from fedmed.privacy.messages import WireMessage
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
METRIC_NAMES, UPDATE_SIZE = "metric-names", "update-size"


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
