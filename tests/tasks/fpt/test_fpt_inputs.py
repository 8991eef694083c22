"""FPT §2.5: augmentation reaches only the side network, never the frozen model."""

from __future__ import annotations

import pytest
import torch

from fedmed.data.image_folder import load_rgb
from fedmed.data.synth_highres import write_synthetic_highres
from fedmed.tasks.fpt.data import eval_transform
from fedmed.tasks.registry import get_task

SITE = {"partition-id": 0, "num-partitions": 1}


@pytest.fixture
def one_site(tmp_path):
    write_synthetic_highres(tmp_path, 1, seed=2, size=128, images_per_site=20)
    return tmp_path


def _capture_inputs(module: torch.nn.Module, seen: list[torch.Tensor]):
    return module.register_forward_pre_hook(
        lambda _module, args: seen.extend(args[0].detach().clone())
    )


def _matches(image: torch.Tensor, references: list[torch.Tensor]) -> int:
    return sum(torch.equal(image, reference) for reference in references)


def test_no_preload_training_feeds_the_frozen_model_unaugmented_images(
    one_site, tiny_run_config
):
    # Prepare: live frozen model (no preloading), augmentation on, one step
    task = get_task(
        tiny_run_config(one_site, preload=False, augment=True, max_steps_per_round=1)
    )
    data = task.site_data(SITE)
    model = task.build_model()
    frozen_seen: list[torch.Tensor] = []
    side_seen: list[torch.Tensor] = []
    hooks = [
        _capture_inputs(model.frozen.vit.patch_embed, frozen_seen),
        _capture_inputs(model.side.patch_embed, side_seen),
    ]
    high = eval_transform(task.cfg.high_res, task.norm)
    low = eval_transform(task.cfg.low_res, task.norm)
    originals = [load_rgb(r.path) for r in data.train.records]
    # Execute
    result = task.fit(model, data, {"server-round": 1})
    for hook in hooks:
        hook.remove()
    # Assert: every frozen input is exactly one site image, resized and normalised
    assert result.metrics["steps"] == 1
    assert len(frozen_seen) == len(side_seen) == min(16, len(originals))
    plain_high = [high(image) for image in originals]
    assert [_matches(image, plain_high) for image in frozen_seen] == [1] * len(
        frozen_seen
    )
    # ... while the side network sees augmented views, none equal to a plain one
    plain_low = [low(image) for image in originals]
    assert [_matches(image, plain_low) for image in side_seen] == [0] * len(side_seen)
