"""Privacy: secure aggregation of float vectors (Bonawitz et al. 2017), Flower-free.

Parties (:class:`SecAggParty`) and the server (:class:`SecAggServer`) exchange
the message dataclasses of :mod:`fedmed.privacy.messages` (flat numpy arrays,
no pickle). The server learns only the sum of the parties' vectors, also when
up to ``n - t`` parties drop out of a round.
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
from fedmed.privacy.protocol import Traffic, secure_sum_inprocess, setup_inprocess
from fedmed.privacy.server import SecAggServer, SecureSum

__all__ = [
    "MESSAGE_TYPES",
    "FixedPointCodec",
    "MessageFormatError",
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
    "secure_sum_inprocess",
    "setup_inprocess",
]
