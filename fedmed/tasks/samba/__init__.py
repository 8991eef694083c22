"""SAMBA: federated SAM mask-decoder fine-tuning for brain-tumour MRI (seed paper 001).

Importing this package registers the task ``samba``.
"""

from fedmed.tasks.samba.task import SambaTask

__all__ = ["SambaTask"]
