"""Frozen backbones built once per process and shared by every site it serves.

A Ray actor in simulation (or a warm site worker in a deployment) answers
many messages, for many sites, with the same task configuration. Building the
whole model per message rebuilds a frozen backbone (SAM's image encoder, the
Stable Diffusion U-Net, a CLIP tower) that is identical for all of them: that
is seconds of construction and, per actor, gigabytes held twice.

:class:`BackboneCache` builds a task's model once per configuration (the
*template*) and hands out one private model per message: a structural copy
of the template in which the tensors of the task's declared
:attr:`~fedmed.tasks.base.Task.frozen_parts` are *the same objects* as the
template's, while everything a site may change (trainable parameters, their
buffers, adapter layers, anything outside the frozen parts) is a fresh copy of
the template's initial values, exactly what ``build_model()`` would return.
The global random state after the template's build is restored on every hand
out, so a message sees the random stream a fresh process would.

Isolation rules the copy enforces:

- shared parameters are exactly the frozen ones (``requires_grad`` False) in a
  frozen part; a frozen part holding a trainable tensor keeps it private;
- shared buffers are those of modules without trainable parameters of their
  own, inside a frozen part;
- a declared part that is not a module (a tokenizer) is shared as it is: the
  task declares it read-only;
- a frozen part's normalisation layers with running statistics are pinned to
  eval mode in the copy, so a site's ``model.train()`` cannot update shared
  statistics.
"""

from __future__ import annotations

import copy
import logging
import random
from collections import OrderedDict
from collections.abc import Hashable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _NormBase

from fedmed.tasks.base import Task

log = logging.getLogger(__name__)


@dataclass
class _RandomState:
    """Global random generators as a fresh ``build_model()`` leaves them."""

    torch_cpu: Tensor
    numpy: dict[str, Any]
    python: tuple[Any, ...]

    @classmethod
    def capture(cls) -> _RandomState:
        return cls(torch.get_rng_state(), np.random.get_state(), random.getstate())

    def restore(self) -> None:
        torch.set_rng_state(self.torch_cpu)
        np.random.set_state(self.numpy)
        random.setstate(self.python)


@dataclass
class _Entry:
    template: nn.Module
    shared: dict[int, Any]
    pinned: list[str]
    random_state: _RandomState
    uses: int = field(default=0)


def _declared_parts(task: Task, model: nn.Module) -> Iterator[tuple[str, Any]]:
    """``(name, object)`` for each of ``task.frozen_parts`` (``""``: the model).

    A declared part that the configuration leaves out (``None``, e.g. SeLoRA
    without a VAE) is skipped; a name that is not an attribute path of the
    model is a declaration error.
    """
    for path in task.frozen_parts:
        owner_path, _, attr = path.rpartition(".")
        owner = model.get_submodule(owner_path) if owner_path else model
        if path and not hasattr(owner, attr):
            raise AttributeError(
                f"task {task.name!r} declares frozen part {path!r}, which its model "
                f"({type(model).__name__}) does not have: fix Task.frozen_parts"
            )
        part = getattr(owner, attr) if path else model
        if part is not None:
            yield path, part


def frozen_modules(task: Task, model: nn.Module) -> Iterator[tuple[str, nn.Module]]:
    """The declared frozen parts that are modules, with their names."""
    for path, part in _declared_parts(task, model):
        if isinstance(part, nn.Module):
            yield path, part


def shared_tensors(task: Task, model: nn.Module) -> dict[int, Any]:
    """What every site may share: frozen tensors inside a frozen part, and the
    declared read-only helpers that are not modules (a tokenizer)."""
    shared: dict[int, Any] = {}
    for _, part in _declared_parts(task, model):
        if not isinstance(part, nn.Module):
            shared[id(part)] = part
            continue
        for module in part.modules():
            own = list(module.parameters(recurse=False))
            shared.update({id(p): p for p in own if not p.requires_grad})
            if not any(p.requires_grad for p in own):
                shared.update({id(b): b for b in module.buffers(recurse=False)})
    return shared


def _running_stat_layers(task: Task, model: nn.Module) -> list[str]:
    """Names of frozen-part normalisation layers that keep running statistics."""
    return [
        name
        for path, part in frozen_modules(task, model)
        for name, module in part.named_modules(prefix=path)
        if isinstance(module, _NormBase)
        and module.track_running_stats
        and not any(p.requires_grad for p in module.parameters())
    ]


def _eval_only(module: nn.Module) -> None:
    """Keep ``module`` in eval mode whatever ``train()`` its parents call."""

    def train(mode: bool = True) -> nn.Module:
        return nn.Module.train(module, False)

    module.train(False)
    module.train = train  # type: ignore[method-assign]


class BackboneCache:
    """Per-process templates of task models, keyed by task name + configuration.

    ``max_entries`` bounds how many configurations stay built (least recently
    used is dropped): an actor normally serves one run, so a small bound only
    matters when runs with different models share a process.
    """

    def __init__(self, max_entries: int = 2) -> None:
        if max_entries < 1:
            raise ValueError(f"max_entries must be >= 1, got {max_entries}")
        self.max_entries = max_entries
        self.builds = 0
        self._entries: OrderedDict[Hashable, _Entry] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def model(self, task: Task) -> nn.Module:
        """A private model for one message: fresh trainable state, shared backbone.

        Tasks that declare no frozen part are built from scratch as before.
        """
        if not task.frozen_parts:
            return task.build_model()
        entry = self._entry(task)
        entry.uses += 1
        model = copy.deepcopy(entry.template, memo=dict(entry.shared))
        for name in entry.pinned:
            _eval_only(model.get_submodule(name))
        entry.random_state.restore()
        return model

    def template(self, task: Task) -> nn.Module:
        """The cached template itself (read-only: benchmarks and tests inspect it)."""
        return self._entry(task).template

    def clear(self) -> None:
        """Drop every template (their memory returns once no model uses them)."""
        self._entries.clear()

    def _entry(self, task: Task) -> _Entry:
        key = task.model_key()
        if key in self._entries:
            self._entries.move_to_end(key)
            return self._entries[key]
        template = task.build_model()
        self.builds += 1
        entry = _Entry(
            template,
            shared_tensors(task, template),
            _running_stat_layers(task, template),
            _RandomState.capture(),
        )
        log.info(
            "built %s once for this process: %d frozen objects shared (%.1f M values)",
            task.name,
            len(entry.shared),
            sum(t.numel() for t in entry.shared.values() if isinstance(t, Tensor))
            / 1e6,
        )
        self._entries[key] = entry
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
        return entry
