"""Fine-grained Prompt Tuning (FPT): frozen high-res ViT + low-res side network."""

from fedmed.tasks.fpt.task import FptTask

__all__ = ["FptTask"]
