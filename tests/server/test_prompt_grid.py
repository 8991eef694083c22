"""Replies are seen promptly and handed over in the order the messages went out."""

from types import SimpleNamespace

from flwr.superlink.grid.http_grid import HttpGrid

from server.prompt_grid import prompt_replies, send_and_receive


class ScriptedGrid:
    """Each pull returns the next batch of replies (to the ids pushed)."""

    def __init__(self, batches: list[list[int]]) -> None:
        self.batches = batches
        self.pulls = 0
        self.asks: list = []

    def push_messages(self, messages) -> list[str]:
        self.asks = list(messages)
        return [f"m{k}" for k in range(len(self.asks))]

    def pull_messages(self, message_ids) -> list:
        batch = self.batches[self.pulls] if self.pulls < len(self.batches) else []
        self.pulls += 1
        return [
            SimpleNamespace(metadata=SimpleNamespace(reply_to_message_id=f"m{k}"))
            for k in batch
        ]


def asks(count: int) -> list:
    return [SimpleNamespace(dst_node_id=100 + k) for k in range(count)]


def test_replies_come_back_in_the_order_the_messages_were_sent():
    # Prepare: site 2 answers first, then nobody, then sites 0 and 1
    grid = ScriptedGrid([[2], [], [1, 0]])
    # Execute
    replies = send_and_receive(grid, asks(3), timeout=10)
    # Assert
    assert [r.metadata.reply_to_message_id for r in replies] == ["m0", "m1", "m2"]
    assert grid.pulls == 3


def test_a_timeout_returns_the_replies_that_came():
    # Prepare: site 1 never answers
    grid = ScriptedGrid([[0]])
    # Execute
    replies = send_and_receive(grid, asks(2), timeout=0.3)
    # Assert
    assert [r.metadata.reply_to_message_id for r in replies] == ["m0"]
    assert grid.pulls >= 2


def test_only_a_deployment_grid_is_changed(monkeypatch):
    # Prepare
    from flwr.superlink.grid import http_grid

    monkeypatch.setattr(http_grid, "pull_objects", http_grid.pull_objects)
    other = ScriptedGrid([])
    deployed = HttpGrid("127.0.0.1:1", insecure=True, token="t")
    # Execute
    prompt_replies(other), prompt_replies(deployed), prompt_replies(deployed)
    # Assert
    assert "send_and_receive" not in vars(other)
    assert "send_and_receive" in vars(deployed)
    assert http_grid.pull_objects.keywords["initial_backoff"] == 0.05
    assert http_grid.pull_objects.keywords["max_tries_per_object"] is None
    assert not isinstance(http_grid.pull_objects.func, type(http_grid.pull_objects))
