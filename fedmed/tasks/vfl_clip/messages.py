"""VFL-CLIP messages beyond secure aggregation, as flat numpy arrays (no pickle).

Per training round ``r`` (secure-aggregation round id ``2r``, see
:func:`secagg_round_id`)::

    knowledge provider -> server      TextFeatures(r, T, logit_scale)
    server -> image providers         TextFeatures + MaskRequest(2r)
                                      (+ KeyDirectory in a provider's first round)
    image provider -> server          MaskedInput of [G_i (C*d), loss_i, N_i]
    server <-> image providers        UnmaskRequest / UnmaskResponse
    server -> knowledge provider      AggregatedGradient(r, sum G_i, sum loss_i,
                                                         sum N_i)

Evaluation after round ``r`` uses secure-aggregation round id ``2r + 1`` and
the statistics vector of :func:`fedmed.tasks.vfl_clip.metrics.evaluation_statistics`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

import numpy as np

from fedmed.privacy.errors import MessageFormatError
from fedmed.privacy.messages import WireMessage


def secagg_round_id(server_round: int, phase: Literal["train", "evaluate"]) -> int:
    """Strictly increasing secure-aggregation round ids for train and evaluate."""
    return 2 * server_round + (0 if phase == "train" else 1)


@dataclass(frozen=True, eq=False)
class TextFeatures(WireMessage):
    """Class text features ``T`` (C x d) of the current context, and CLIP's scale."""

    kinds: ClassVar = {"round": "int", "features": "matrix", "logit_scale": "float"}
    round: int
    features: np.ndarray
    logit_scale: float

    def __post_init__(self) -> None:
        if not np.isfinite(self.features).all() or not np.isfinite(self.logit_scale):
            raise MessageFormatError("TextFeatures: features must be finite")


@dataclass(frozen=True, eq=False)
class AggregatedGradient(WireMessage):
    """The secure sum over image providers, as the knowledge provider receives it."""

    kinds: ClassVar = {
        "round": "int",
        "gradient_sum": "matrix",
        "loss_sum": "float",
        "count": "int",
    }
    round: int
    gradient_sum: np.ndarray
    loss_sum: float
    count: int

    @classmethod
    def from_sum(
        cls, round_id: int, vector: np.ndarray, num_classes: int, dim: int
    ) -> AggregatedGradient:
        """Unpack a decoded secure sum ``[sum G_i (C*d), sum loss_i, sum N_i]``."""
        expected = num_classes * dim + 2
        if vector.shape != (expected,):
            raise MessageFormatError(
                f"aggregated vector must have {expected} entries (C*d + 2), "
                f"found shape {vector.shape}"
            )
        count = int(round(float(vector[-1])))
        gradient = vector[:-2].reshape(num_classes, dim)
        return cls(round_id, gradient, float(vector[-2]), count)
