"""Errors of the secure-aggregation protocol, one class per failure a caller handles.

Every message says what was expected, what was found and what to do, so a
ClientApp can simply raise and the strategy can log the reply as failed.
"""

from __future__ import annotations


class SecAggError(RuntimeError):
    """Base class of every secure-aggregation failure."""


class ValueOutOfRange(SecAggError, ValueError):
    """A value cannot be encoded in the fixed-point range (never silently clipped)."""

    def __init__(
        self,
        party: int,
        index: int,
        value: float,
        value_range: float,
        hint: str = "raise the codec's value_range (costs precision) or rescale "
        "the input",
    ):
        self.party = party
        self.index = index
        self.value = value
        self.value_range = value_range
        super().__init__(
            f"party {party}: value {value!r} at index {index} is outside the "
            f"fixed-point range [-{value_range:g}, {value_range:g}] (or not finite); "
            f"{hint}"
        )


class ShareTampered(SecAggError):
    """An encrypted share failed authentication: modified, replayed or misrouted."""

    def __init__(self, sender: int, recipient: int, round_id: int):
        self.sender = sender
        self.recipient = recipient
        super().__init__(
            f"party {recipient}: the self-mask share from party {sender} for round "
            f"{round_id} failed authentication (tampered, replayed or misrouted); "
            "it was rejected. Check the route between the parties and the server."
        )


class RecoveryFailed(SecAggError):
    """Too few parties are left to remove the masks: the round's sum is lost."""


class ProtocolError(SecAggError):
    """A message arrived out of order, for the wrong run/round, or breaks a rule."""


class MessageFormatError(SecAggError, ValueError):
    """A message's arrays have missing keys, wrong dtypes or wrong shapes."""
