"""VFL-CLIP (seed paper 003): CLIP split vertically, CoOp prompts, secure aggregation.

Image providers keep images and frozen image embeddings; knowledge providers
(one by default) keep text towers, class descriptions and CoOp contexts; the
server only ever sees masked vectors and sums over image providers (and, with
several knowledge providers, over their text features). Importing this
package registers the task as ``vfl-clip``.
"""

from fedmed.tasks.vfl_clip.config import VflClipConfig
from fedmed.tasks.vfl_clip.protocol import run_vfl_inprocess
from fedmed.tasks.vfl_clip.roles import (
    ImageProvider,
    KnowledgeProvider,
    VflSetupError,
    resolve_role,
)
from fedmed.tasks.vfl_clip.task import VflClipTask

__all__ = [
    "ImageProvider",
    "KnowledgeProvider",
    "VflClipConfig",
    "VflClipTask",
    "VflSetupError",
    "resolve_role",
    "run_vfl_inprocess",
]
