"""Classification baseline: timm ViT with full / linear / LoRA fine-tuning."""

from fedmed.tasks.classify.task import ClassifyTask

__all__ = ["ClassifyTask"]
