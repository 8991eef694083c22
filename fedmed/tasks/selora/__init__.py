"""SeLoRA: self-expanding LoRA for Stable Diffusion on chest X-ray reports (seed 002).

Mao et al. 2024, "SeLoRA: Self-Expanding Low-Rank Adaptation of Latent
Diffusion Model for Medical Image Synthesis". Importing this package
registers the ``selora`` task.
"""

from fedmed.tasks.selora.task import SeLoRATask

__all__ = ["SeLoRATask"]
