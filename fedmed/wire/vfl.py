"""What VFL-CLIP carries over Flower: its actions and message keys.

The ServerApp (``strategies.vfl_clip``) and the nodes (``clients.vfl_clip``)
speak through these names only::

    query.vfl_role     any node             -> config {role, site, knowledge-id}
                       (site -1 for knowledge providers, knowledge-id -1 for
                       image providers)
    train.vfl_keys / _shares / _ready / _unmask   secure aggregation
                       (:data:`VFL_PARTY`, :mod:`fedmed.wire.secagg`)
    train.vfl_mask     TextFeatures under TEXT + MaskRequest, config
                       {phase, batch-seed, server-round} -> MaskedInput
    train.vfl_text     config {server-round} (+ arrays to resume) -> TEXT, arrays
    train.vfl_apply    AggregatedGradient   -> TEXT, arrays, metrics (one
                       knowledge provider); metrics only with several
    train.vfl_text_keys / _mask / _unmask   secure sum of ``[T_k, s_k]`` over
                       several knowledge providers (:data:`VFL_TEXT_PARTY`,
                       party id = knowledge-id; ``_mask`` takes MaskRequest
                       (+ KeyDirectory) -> MaskedInput)
"""

from __future__ import annotations

from fedmed.wire.secagg import PartyActions

ROLE_ACTION = "vfl_role"
TEXT_ACTION = "vfl_text"
APPLY_ACTION = "vfl_apply"
VFL_PARTY = PartyActions("vfl", "vfl-secagg-party")
VFL_TEXT_PARTY = PartyActions("vfl_text", "vfl-text-party")

TEXT = "text"
ROLE, SITE, KNOWLEDGE_ID = "role", "site", "knowledge-id"
PHASE, BATCH_SEED = "phase", "batch-seed"
