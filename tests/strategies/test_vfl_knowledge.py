"""The VFL server's checks on its knowledge providers (several of them)."""

from __future__ import annotations

import pytest
import torch
from flwr.app import ConfigRecord

from fedmed.tasks.registry import get_task
from fedmed.tasks.vfl_clip.roles import VflSetupError
from strategies.vfl_clip import VerticalRun, _knowledge_nodes
from strategies.vfl_knowledge import knowledge_label
from tests.tasks.vfl_clip.conftest import tiny_run_config


def roles(*knowledge_ids: int, images: int = 3) -> dict[int, ConfigRecord]:
    """Role replies: ``images`` image providers, then knowledge providers."""
    found = {
        n: ConfigRecord({"role": "image-provider", "site": n, "knowledge-id": -1})
        for n in range(images)
    }
    for j, k in enumerate(knowledge_ids):
        found[100 + j] = ConfigRecord(
            {"role": "knowledge-provider", "site": -1, "knowledge-id": k}
        )
    return found


def test_knowledge_nodes_by_id_and_every_id_exactly_once():
    # Execute
    found = _knowledge_nodes(roles(1, 0), count=2)
    # Assert
    assert found == {0: 101, 1: 100}
    for wrong in (roles(0, 0), roles(0), roles(0, 2), roles(0, 1, 2)):
        with pytest.raises(VflSetupError, match="knowledge-id 0..1"):
            _knowledge_nodes(wrong, count=2)


def test_a_run_with_several_knowledge_providers_refuses_to_resume():
    # Prepare: the server holds no contexts to restart the providers from
    task = get_task(tiny_run_config(knowledge_providers=2))
    run = VerticalRun(task, run=None, transport=None)  # type: ignore[arg-type]
    checkpoint = {"text_features": torch.zeros(7, 32), "logit_scale": torch.ones(())}
    # Execute / Assert: before any node is asked anything (no transport here)
    with pytest.raises(VflSetupError, match="cannot be resumed"):
        run.start(3, 4, resume_from=checkpoint, min_nodes=5)


def test_byte_count_labels_of_knowledge_providers():
    assert knowledge_label(0, 1) == "knowledge"
    assert [knowledge_label(k, 3) for k in range(3)] == [
        "knowledge-0",
        "knowledge-1",
        "knowledge-2",
    ]
