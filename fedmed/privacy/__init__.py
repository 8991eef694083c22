"""Privacy: secure aggregation of float vectors (Bonawitz et al. 2017), Flower-free.

Parties (:class:`SecAggParty`) and the server (:class:`SecAggServer`) exchange
the message dataclasses of :mod:`fedmed.privacy.messages` (flat numpy arrays,
no pickle). The server learns only the sum of the parties' vectors, also when
up to ``n - t`` parties drop out of a round.

Threat model: an honest-but-curious server and parties (Bonawitz et al.
2017, semi-honest setting), plus fail-stop dropouts. The server learns only
sums over at least ``t`` parties; coalitions of fewer than ``t`` parties with
the server learn nothing more. Tampering with routed shares is detected
(AEAD), and so are altered revealed shares when more than ``t`` arrive. Not
covered: a server that substitutes public keys in the directory (needs
signed keys, e.g. from SuperNode authentication) or shows different
survivor sets to different parties (needs the consistency-check round of the
actively secure variant).
"""

from fedmed.privacy.directory import default_threshold
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
from fedmed.privacy.server import SecAggServer, SecureSum

__all__ = [
    "MESSAGE_TYPES",
    "FixedPointCodec",
    "InProcessChannel",
    "MessageFormatError",
    "PartyChannel",
    "ProtocolError",
    "RecoveryFailed",
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
