"""A plain in-process federated loop: the same work as a simulation, no runtime.

Per round every site builds the model, loads the aggregate as it arrives over
the wire (encoded and decoded with the run's codec), trains, and sends its
update back through the same codec; the server aggregates with the task's
own rule and scores the aggregate on the held-out set. Optional central DP
(clip each site's update to ``clip_norm``, average uniformly, add Gaussian
noise of std ``noise_multiplier * clip_norm / m``: DP-FedAvg, McMahan et al.
2018, the mechanism of Flower's fixed-clipping wrappers) and optional site
evaluation. The DP mechanism is :mod:`fedmed.privacy.dp`'s, the one real
runs use. Used as the reference of the ``scale`` bench and as the fast path
of the codec-cost and DP-utility measurements.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from torch import Tensor

from fedmed.comm.codecs import decode, encode
from fedmed.config import Scalar
from fedmed.privacy.dp import CentralDP, private_mean, update_norm
from fedmed.tasks import Task, get_task

log = logging.getLogger(__name__)


@dataclass
class LoopResult:
    """Per-round walls and metrics of one in-process federated run."""

    round_walls_s: list[float] = field(default_factory=list)
    heldout: list[dict[str, float]] = field(default_factory=list)
    #: Per round, the L2 norm of each site's update (before any clipping).
    site_update_norms: list[list[float]] = field(default_factory=list)
    clipped_fraction: list[float] = field(default_factory=list)


def wire(state: Mapping[str, Tensor], codec: str) -> dict[str, Tensor]:
    """What the receiver gets after ``codec`` encoding and decoding."""
    return decode(encode(state, codec))


def _site_round(
    task: Task, state: Mapping[str, Tensor], site: int, sites: int, round_config
) -> tuple[dict[str, Tensor], int]:
    model = task.build_model()
    task.load_exchanged(model, state)
    node = {"partition-id": site, "num-partitions": sites}
    result = task.fit(model, task.site_data(node), round_config)
    return task.exchanged(model), result.num_examples


def _aggregate(
    task: Task,
    down: Mapping[str, Tensor],
    updates: list[dict[str, Tensor]],
    weights: list[float],
    dp: CentralDP | None,
    generator: torch.Generator,
    result: LoopResult,
) -> dict[str, Tensor]:
    """The task's weighted aggregate, or DP-FedAvg's clipped noisy uniform mean."""
    norms = [update_norm(u, down) for u in updates]
    result.site_update_norms.append(norms)
    if dp is None:
        result.clipped_fraction.append(0.0)
        return task.aggregate(updates, weights)
    result.clipped_fraction.append(sum(n > dp.clip_norm for n in norms) / len(norms))
    return private_mean(updates, down, dp, generator)


def _evaluate_sites(task: Task, state: Mapping[str, Tensor], sites: int) -> None:
    """Every site scores the aggregate on its own test split (results unused)."""
    for k in range(sites):
        model = task.build_model()
        task.load_exchanged(model, state)
        task.evaluate(
            model, task.site_data({"partition-id": k, "num-partitions": sites})
        )


def federated_loop(
    run_config: Mapping[str, Scalar],
    sites: int,
    rounds: int,
    *,
    codec: str = "fp32",
    dp: CentralDP | None = None,
    evaluate_sites: bool = False,
) -> LoopResult:
    """Run ``rounds`` of FedAvg over ``sites`` sites sequentially in this process.

    ``round_walls_s`` times the sites' work, the wire codec and aggregation
    (and site evaluation when asked), not the held-out scoring: the same span
    the simulation's ``metrics.jsonl`` walls cover.
    """
    task = get_task(dict(run_config))
    state = task.exchanged(task.build_model())
    heldout = task.heldout_data()
    generator = dp.generator() if dp else torch.Generator()
    result = LoopResult()
    for server_round in range(1, rounds + 1):
        started = time.perf_counter()
        down = wire(state, codec)
        replies = [
            _site_round(task, down, k, sites, {"server-round": server_round})
            for k in range(sites)
        ]
        updates = [wire(update, codec) for update, _ in replies]
        weights = [float(n) for _, n in replies]
        state = _aggregate(task, down, updates, weights, dp, generator, result)
        if evaluate_sites:
            _evaluate_sites(task, wire(state, codec), sites)
        result.round_walls_s.append(time.perf_counter() - started)
        if heldout is not None:  # scored, not timed: the simulation does not time it
            model = task.build_model()
            task.load_exchanged(model, wire(state, codec))
            result.heldout.append(task.evaluate_heldout(model, heldout))
        log.info("loop round %d: %.2f s", server_round, result.round_walls_s[-1])
    return result
