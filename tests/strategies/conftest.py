"""Fake Flower replies for strategy tests: real ``Message`` objects, no runtime.

A strategy is driven the way ``Strategy.start`` drives it: ``configure_*``
builds the messages to the sites, and each test answers them with real
``flwr.app.Message`` replies (``reply_to`` the ask, so the metadata carries
the site's node id), error replies included. The task is a two-tensor stand-in
with the default contract (exact shape/finite check, example-weighted mean),
so a test runs in milliseconds and every number in it can be checked by hand.
"""

from __future__ import annotations

from collections.abc import Mapping

import pytest
import torch
from flwr.app import ArrayRecord, ConfigRecord, Error, Message, RecordDict
from flwr.common.constant import ErrorCode
from flwr.supercore.task_identity import TaskIdentity
from torch import Tensor, nn

from fedmed.config import PlatformConfig
from fedmed.runs import RunDirectory
from fedmed.tasks.base import RoundResult, SiteData, Task
from fedmed.wire import (
    ARRAYS,
    METRICS,
    SITE_ID,
    STATISTICS,
    metric_record,
    state_to_record,
)

NODE_BASE = 100  # node ids differ from site ids, as in a deployment


class PairTask(Task):
    """Two exchanged tensors, the base contract's validation and mean."""

    name = "pair"
    config_class = dict

    def build_model(self) -> nn.Module:
        return nn.Linear(3, 2)

    def exchanged(self, model: nn.Module) -> dict[str, Tensor]:
        return {k: v.detach().clone() for k, v in model.state_dict().items()}

    def load_exchanged(self, model: nn.Module, state: Mapping[str, Tensor]) -> None:
        model.load_state_dict(dict(state))

    def site_data(self, node_config):  # pragma: no cover - never trained here
        raise NotImplementedError

    def fit(self, model, data: SiteData, round_config) -> RoundResult:  # noqa: D102
        raise NotImplementedError  # pragma: no cover

    def evaluate(self, model, data: SiteData) -> RoundResult:  # noqa: D102
        raise NotImplementedError  # pragma: no cover

    def pooled_metrics(self, site_statistics):
        """Pooled accuracy from the sites' (correct, total) counts."""
        correct = sum(stats["counts"][0] for stats in site_statistics)
        total = sum(stats["counts"][1] for stats in site_statistics)
        return {"accuracy": correct / total}


@pytest.fixture(autouse=True)
def _inside_serverapp(monkeypatch):
    for field in ("_run_id", "_node_id", "_task_id"):  # as in a running ServerApp
        monkeypatch.setattr(TaskIdentity, field, 1)


@pytest.fixture
def task() -> PairTask:
    return PairTask(None, PlatformConfig())


@pytest.fixture
def run(tmp_path) -> RunDirectory:
    directory = RunDirectory(tmp_path / "run")
    directory.create({"task.name": "pair"})
    return directory


class FakeGrid:
    """``get_node_ids`` for ``configure_*``; replies are made by the test."""

    def __init__(self, sites: int) -> None:
        self.nodes = [NODE_BASE + k for k in range(sites)]

    def get_node_ids(self) -> list[int]:
        return list(self.nodes)


def reference_state() -> dict[str, Tensor]:
    return {"weight": torch.zeros(2, 3), "bias": torch.zeros(2)}


def global_arrays() -> ArrayRecord:
    return state_to_record(reference_state(), "fp32")


def asks(
    strategy,
    sites: int,
    phase: str = "train",
    server_round: int = 1,
    arrays: ArrayRecord | None = None,
) -> list[Message]:
    """The strategy's messages of one round to ``sites`` sites, node id order."""
    configure = getattr(strategy, f"configure_{phase}")
    arrays = global_arrays() if arrays is None else arrays
    messages = configure(server_round, arrays, ConfigRecord(), FakeGrid(sites))
    return sorted(messages, key=lambda m: m.metadata.dst_node_id)


def site_of(ask: Message) -> int:
    return ask.metadata.dst_node_id - NODE_BASE


def update_reply(
    ask: Message, state: Mapping[str, Tensor], examples: float, **metrics: float
) -> Message:
    """A site's training reply: its update and metrics, as the ClientApp sends."""
    values = {**metrics, "num-examples": examples, SITE_ID: site_of(ask)}
    content = RecordDict(
        {ARRAYS: state_to_record(state, "fp32"), METRICS: metric_record(values)}
    )
    return Message(content, reply_to=ask)


def evaluate_reply(
    ask: Message, examples: int, counts: list[float] | None = None, **metrics
) -> Message:
    """A site's evaluation reply, with optional sufficient statistics."""
    values = {**metrics, "num-examples": examples, SITE_ID: site_of(ask)}
    content = RecordDict({METRICS: metric_record(values)})
    if counts is not None:
        content[STATISTICS] = metric_record({"counts": counts})
    return Message(content, reply_to=ask)


def error_reply(ask: Message, reason: str) -> Message:
    """What Flower delivers when the ClientApp raised."""
    error = Error(code=ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason=reason)
    return Message(error, reply_to=ask)


def filled(value: float) -> dict[str, Tensor]:
    """A state shaped like the reference with every element ``value``."""
    return {k: torch.full_like(v, value) for k, v in reference_state().items()}
