"""fedmed.privacy.weighted_sum: FedAvg's weighted mean through a secure sum."""

from __future__ import annotations

import math
import tomllib
from pathlib import Path

import numpy as np
import pytest
import torch

from fedmed.comm.aggregation import weighted_mean
from fedmed.comm.selection import UpdateRejected
from fedmed.config import ConfigError, parse_platform
from fedmed.privacy import ValueOutOfRange, secure_sum_inprocess, setup_inprocess
from fedmed.privacy.weighted_sum import (
    check_secure_aggregation,
    check_site_update,
    clip_update_norm,
    mean_from_sum,
    site_vector,
    update_codec,
)
from fedmed.tasks import get_task, list_tasks
from fedmed.tasks.classify.task import ClassifyTask

REPO = Path(__file__).resolve().parents[2]  # not via secagg_grid: no Flower

SHAPES = {"head.weight": (7, 5), "head.bias": (7,), "lora_A": (4, 16)}


def _states(count: int, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    generator = torch.Generator().manual_seed(seed)
    return [
        {k: torch.randn(s, generator=generator) for k, s in SHAPES.items()}
        for _ in range(count)
    ]


def _tiny(name: str) -> dict:
    return tomllib.loads((REPO / "configs" / f"{name}_tiny.toml").read_text())


def test_secure_mean_equals_the_plain_weighted_mean_within_one_step():
    # Prepare: 3 sites train, a 4th rejected its update and masks zeros
    states, weights = _states(3), [420, 17, 133]
    metrics = [{"loss": 1.5, "acc": 0.5}, {"loss": 2.5}, {"loss": math.nan}]
    names = ("acc", "loss")
    size = sum(math.prod(s) for s in SHAPES.values())
    value_range = 1e9
    vectors = {
        p: site_vector(s, n, m, names, size, value_range)
        for p, (s, n, m) in enumerate(zip(states, weights, metrics, strict=True))
    }
    vectors[3] = site_vector(None, 0, {}, names, size, value_range)
    server, parties = setup_inprocess(list(vectors), through_bytes=True)
    codec = update_codec(value_range, len(parties))
    # Execute
    total = secure_sum_inprocess(server, parties, 1, vectors, codec)
    mean = mean_from_sum(total.values, states[0], names)
    # Assert
    plain = weighted_mean(states, weights)
    step = 1 / codec.scale
    for key in SHAPES:
        assert mean.state[key].shape == plain[key].shape
        error = (mean.state[key].double() - plain[key].double()).abs().max()
        assert error <= step + 2**-23 * plain[key].abs().max()  # + float32 rounding
    assert mean.num_examples == pytest.approx(sum(weights), abs=step)
    assert mean.metrics["loss"] == pytest.approx((420 * 1.5 + 17 * 2.5) / 437)
    assert mean.metrics["acc"] == pytest.approx(0.5)  # only site 0 reported it


@pytest.mark.parametrize("claimed", [math.inf, math.nan, 1e18, 2.5, -3.0])
def test_site_refuses_example_counts_that_are_not_finite_capped_integers(claimed):
    # Prepare
    task = get_task(_tiny("classify"))
    reference = _states(1)[0]
    # Execute / Assert: refused, never an OverflowError that ends the run
    with pytest.raises(UpdateRejected, match="num-examples"):
        check_site_update(
            task, reference, reference, claimed, value_range=1e30, max_examples=1e6
        )
    assert check_site_update(task, reference, reference, 1e6, 1e30, 1e6) == 10**6


def test_update_norm_is_clipped_to_the_bound_before_masking():
    # Prepare: an update 1e30 away from the aggregate, and one equal to it
    reference = _states(1)[0]
    huge = {k: v + 1e30 for k, v in reference.items()}
    # Execute
    bounded, norm = clip_update_norm(huge, reference, max_norm=2.0)
    unchanged, zero = clip_update_norm(reference, reference, max_norm=2.0)
    off, _ = clip_update_norm(huge, reference, max_norm=0.0)
    # Assert
    distance = math.sqrt(
        sum(
            float(((bounded[k].double() - reference[k].double()) ** 2).sum())
            for k in reference
        )
    )
    assert norm > 1e30 and distance == pytest.approx(2.0, rel=1e-5)
    assert zero == 0.0
    assert all(torch.equal(unchanged[k], reference[k]) for k in reference)
    assert all(torch.equal(off[k], huge[k]) for k in reference)


def test_site_rejects_out_of_range_nonfinite_and_misshaped_updates():
    # Prepare
    task = get_task(_tiny("classify"))
    reference = _states(1)[0]
    big = {k: v * 1000 for k, v in reference.items()}
    nan = {**reference, "head.bias": torch.full((7,), math.nan)}
    shape = {**reference, "head.bias": torch.zeros(8)}
    # Execute / Assert: the site's own check, with a message that names the fix
    with pytest.raises(
        UpdateRejected, match=r"'.*' reaches .* secagg-value-range 10000"
    ):
        check_site_update(task, big, reference, 100, value_range=1e4)
    with pytest.raises(UpdateRejected, match="NaN or Inf"):
        check_site_update(task, nan, reference, 100, value_range=1e9)
    with pytest.raises(UpdateRejected, match="shape"):
        check_site_update(task, shape, reference, 100, value_range=1e9)
    with pytest.raises(UpdateRejected, match="num-examples"):
        check_site_update(task, reference, reference, 0, value_range=1e9)
    check_site_update(task, reference, reference, 100, value_range=1e9)
    # The codec itself refuses what the check would have let through: never clipped
    size = sum(v.numel() for v in big.values())
    vector = site_vector(big, 100, {}, (), size, value_range=1e12)
    with pytest.raises(ValueOutOfRange):
        update_codec(1e4, 3).encode(vector)


class MedianClassify(ClassifyTask):
    """A task whose aggregate is not the weighted mean (not registered)."""

    aggregation = "custom"

    def aggregate(self, states, weights):
        """Element-wise median of the site states."""
        return {
            k: torch.stack([s[k] for s in states]).median(0).values for k in states[0]
        }


class MeanClassify(ClassifyTask):
    """A task that overrides aggregate but still averages (not registered)."""

    def aggregate(self, states, weights):
        """The example-weighted mean, written out."""
        return weighted_mean(states, weights)


def test_tasks_that_do_not_average_same_shapes_are_refused_with_the_reason():
    # Prepare
    classify = _tiny("classify")
    # Execute / Assert
    with pytest.raises(ConfigError, match="'selora' declares aggregation = 'custom'"):
        check_secure_aggregation(get_task(_tiny("selora")))
    with pytest.raises(ConfigError, match="not the example-weighted mean"):
        check_secure_aggregation(MedianClassify.from_run_config(classify))
    check_secure_aggregation(MeanClassify.from_run_config(classify))
    for name in ("classify", "fpt", "samba"):  # weighted means of fixed shapes
        check_secure_aggregation(get_task(_tiny(name)))


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"min-sites": 1}, "min-sites >= 2"),
        ({"comm-dtype": "int8"}, "comm-dtype=fp32"),
        ({"comm-dtype": "fp16"}, "comm-dtype=fp32"),
        ({"secagg-value-range": 0.0}, "secagg-value-range"),
    ],
)
def test_platform_refuses_one_site_and_compressed_updates(override, message):
    config = {"task.name": "classify", "secure-aggregation": True, **override}
    with pytest.raises(ConfigError, match=message):
        parse_platform(config, list_tasks())


def test_defaults_parse_and_plain_runs_keep_their_options():
    plain = parse_platform({"min-sites": 1, "comm-dtype": "int8"}, list_tasks())
    secure = parse_platform({"secure-aggregation": True}, list_tasks())
    assert not plain.secure_aggregation and plain.comm_dtype == "int8"
    assert secure.secagg_value_range == 1e9 and secure.min_sites == 2
    assert np.isfinite(update_codec(secure.secagg_value_range, 100).scale)
