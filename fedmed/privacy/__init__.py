"""Privacy: secure aggregation of float vectors, Flower-free (protocol v2).

Parties (:class:`SecAggParty`) and the server (:class:`SecAggServer`) exchange
the message dataclasses of :mod:`fedmed.privacy.messages` (flat numpy arrays,
no pickle). Double masking of Bonawitz et al. 2017 over the sparse neighbour
graph of Bell et al. 2020 (:mod:`~fedmed.privacy.graph`), with round-bound
pair keys (:mod:`~fedmed.privacy.keys`) and a threshold floor the parties
enforce (:mod:`~fedmed.privacy.directory`). Message flow and byte counts:
:mod:`fedmed.privacy.protocol`.

Threat model (details and tests: docs/secure-aggregation.md). Against a
curious server, and a malicious one that lies about who dropped out, shows
different survivor lists to different parties, replays or reroutes shares,
or proposes a low threshold, across any number of rounds: no combination of
the messages it receives reveals one party's input; fewer than
``2t - k`` colluding neighbours of a party do not change that. Tampered
shares are detected (AEAD), altered revealed shares when more than ``t``
arrive. Not covered: a server that substitutes public keys (needs keys
authenticated outside the protocol), a malicious party skewing the sum, and
what sums over different subsets of parties say about each other.
"""

from fedmed.privacy.directory import Floor, default_threshold
from fedmed.privacy.errors import (
    MessageFormatError,
    ProtocolError,
    RecoveryFailed,
    SecAggError,
    ShareTampered,
    ValueOutOfRange,
)
from fedmed.privacy.fixed_point import FixedPointCodec
from fedmed.privacy.messages import MESSAGE_TYPES
from fedmed.privacy.party import SecAggParty
from fedmed.privacy.protocol import (
    InProcessChannel,
    PartyChannel,
    Traffic,
    run_setup,
    secure_sum,
    secure_sum_inprocess,
    setup_inprocess,
)
from fedmed.privacy.server import RoundStart, SecAggServer, SecureSum

__all__ = [
    "MESSAGE_TYPES",
    "FixedPointCodec",
    "Floor",
    "InProcessChannel",
    "MessageFormatError",
    "PartyChannel",
    "ProtocolError",
    "RecoveryFailed",
    "RoundStart",
    "SecAggError",
    "SecAggParty",
    "SecAggServer",
    "SecureSum",
    "ShareTampered",
    "Traffic",
    "ValueOutOfRange",
    "default_threshold",
    "run_setup",
    "secure_sum",
    "secure_sum_inprocess",
    "setup_inprocess",
]
