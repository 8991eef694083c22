"""A knowledge provider among several never sends its text features in the clear.

Its ``T_k`` (or its context, from which anyone with the public tower computes
``T_k``) would let the server subtract it from the mean; only the masked
``[T_k, s_k]`` may leave the node.
"""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.supercore.task_identity import TaskIdentity

from clients.vfl_clip import KNOWLEDGE_STATE, apply_gradient, publish_text, role_reply
from fedmed.tasks.vfl_clip.messages import AggregatedGradient
from fedmed.wire import CONFIG, METRICS, SERVER_ROUND, record_to_arrays
from fedmed.wire.secagg import request_content
from tests.tasks.vfl_clip.conftest import tiny_run_config

TWO = {"knowledge_providers": 2, "knowledge_templates": "skin image|lesion photo"}


@pytest.fixture(autouse=True)
def _inside_an_app(monkeypatch):
    for field in ("_run_id", "_node_id", "_task_id"):  # as inside a running app
        monkeypatch.setattr(TaskIdentity, field, 1)


def knowledge_node(partition: int = 3, **overrides) -> Context:
    """Simulation node ``partition`` of 5 (3 and 4 are the knowledge providers)."""
    return Context(
        run_id=1,
        node_id=20 + partition,
        node_config={"partition-id": partition, "num-partitions": 5},
        state=RecordDict(),
        run_config=tiny_run_config(**(TWO | overrides)),
    )


def ask(content: RecordDict) -> Message:
    return Message(content, dst_node_id=23, message_type="train.vfl")


def test_role_reply_names_the_knowledge_id():
    # Prepare
    context = knowledge_node(partition=3)
    # Execute
    reply = role_reply(ask(RecordDict()), context, None)
    # Assert: partition 3 of 5 is knowledge provider 1
    assert dict(reply[CONFIG]) == {
        "role": "knowledge-provider",
        "site": -1,
        "knowledge-id": 1,
    }


def test_several_knowledge_providers_refuse_to_publish_their_text_features():
    # Prepare
    context = knowledge_node()
    content = RecordDict({CONFIG: ConfigRecord({SERVER_ROUND: 1})})
    # Execute / Assert
    with pytest.raises(RuntimeError, match="masked only"):
        publish_text(ask(content), context, None)


def test_gradient_reply_of_one_among_several_is_the_pooled_loss_only():
    # Prepare: an aggregated gradient of the tiny tower's shape (7 classes)
    context = knowledge_node()
    gradient = np.full((7, 32), 0.01, dtype=np.float32)
    aggregate = AggregatedGradient(1, gradient, loss_sum=12.0, count=6)
    # Execute
    reply = apply_gradient(ask(request_content(aggregate)), context, None)
    # Assert: metrics only; the stepped context stays in the node's state
    assert set(reply) == {METRICS}
    assert reply[METRICS]["train_loss"] == pytest.approx(2.0)
    kept = record_to_arrays(context.state[KNOWLEDGE_STATE])
    assert float(kept["adam_step"]) == 1.0
