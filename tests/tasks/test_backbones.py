"""The per-process backbone cache: shared frozen tensors, private everything else."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
import torch
from torch import nn

from fedmed.tasks import get_task, list_tasks
from fedmed.tasks.backbones import BackboneCache, shared_tensors

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def tiny_task(name: str):
    path = CONFIGS / f"{name.replace('-', '_')}_tiny.toml"
    return get_task(tomllib.loads(path.read_text()))


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("name", list_tasks())
def test_messages_share_only_frozen_tensors(name):
    # Prepare
    task = tiny_task(name)
    cache = BackboneCache()
    # Execute
    first, second = cache.model(task), cache.model(task)
    # Assert
    template = cache.template(task)
    shared = shared_tensors(task, template)
    exchanged = {id(t) for t in task.exchanged(first).values()}
    assert cache.builds == 1
    tensors = [t for t in shared.values() if isinstance(t, torch.Tensor)]
    assert all(not t.requires_grad for t in tensors)
    assert not exchanged & shared.keys(), "an exchanged tensor is shared"
    trainable = [p for p in first.parameters() if p.requires_grad]
    assert all(id(p) not in shared for p in trainable)
    for a, b in zip(first.parameters(), second.parameters(), strict=True):
        assert (a is b) == (id(a) in shared)
    if task.frozen_parts and any(not p.requires_grad for p in template.parameters()):
        assert shared, f"{name} declares frozen parts but shares nothing"


def test_training_leaves_the_cached_backbone_bitwise_unchanged(tmp_path):
    # Prepare
    task = get_task({**_tiny_config("classify"), "data-dir": str(tmp_path)})
    task.synthesize_data(tmp_path, 1, seed=0)
    cache = BackboneCache()
    model = cache.model(task)
    before = snapshot(cache.template(task))
    # Execute
    result = task.fit(
        model, task.site_data({"partition-id": 0, "num-partitions": 1}), {}
    )
    # Assert
    after = snapshot(cache.template(task))
    assert result.num_examples > 0
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    moved = task.exchanged(model)
    initial = task.exchanged(cache.template(task))
    assert any(not torch.equal(moved[k], initial[k]) for k in moved)


def _tiny_config(name: str) -> dict:
    return tomllib.loads((CONFIGS / f"{name}_tiny.toml").read_text())


class _NormTask:
    """A minimal task whose frozen part has BatchNorm running statistics."""

    name = "norm-test"
    frozen_parts = ("backbone",)

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed

    def model_key(self):
        return (self.name, self.seed)

    def build_model(self) -> nn.Module:
        torch.manual_seed(self.seed)
        model = nn.Module()
        model.backbone = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
        model.backbone.requires_grad_(False)
        model.head = nn.Linear(4, 1)
        return model


def test_frozen_running_statistics_stay_in_eval_mode():
    # Prepare
    cache = BackboneCache()
    model = cache.model(_NormTask())
    stats = cache.template(_NormTask()).backbone[1].running_mean.clone()
    # Execute
    model.train()
    model.head(model.backbone(torch.randn(8, 3) + 5)).sum().backward()
    # Assert
    assert model.head.training and not model.backbone[1].training
    assert torch.equal(cache.template(_NormTask()).backbone[1].running_mean, stats)
    assert (
        model.backbone[1].running_mean
        is cache.template(_NormTask()).backbone[1].running_mean
    )


def test_cache_is_bounded_and_keyed_by_configuration():
    # Prepare
    cache = BackboneCache(max_entries=1)
    # Execute
    cache.model(_NormTask(seed=0))
    cache.model(_NormTask(seed=0))
    cache.model(_NormTask(seed=1))
    # Assert
    assert cache.builds == 2
    assert len(cache) == 1


def test_global_random_state_is_that_of_a_fresh_build():
    # Prepare
    cache = BackboneCache()
    cache.model(_NormTask())
    expected = torch.rand(3)
    # Execute
    torch.rand(100)  # another site consumed random numbers
    cache.model(_NormTask())
    # Assert
    assert torch.equal(torch.rand(3), expected)


def test_undeclared_frozen_part_is_an_error():
    task = _NormTask()
    task.frozen_parts = ("encoder",)
    with pytest.raises(AttributeError, match="frozen part 'encoder'"):
        BackboneCache().model(task)
