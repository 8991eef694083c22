"""A Flower grid that runs the ClientApp in this process, for strategy tests.

Every message goes to the real ClientApp handlers with one persistent
``Context`` per site (as a SuperNode keeps it), so a test drives the real
protocol in seconds, without Ray. The grid keeps every reply the server
received, and can lose chosen replies (the site did the work, the server
never hears back): a dropout at that step.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable
from pathlib import Path

import torch
from flwr.app import Context, Message, RecordDict

from clients.client_app import app as client_app
from clients.secagg_site import FIT_STATE, UPDATE_STATE
from fedmed.wire import NUM_EXAMPLES, SERVER_ROUND, record_to_state

REPO = Path(__file__).resolve().parents[2]
NODE_BASE = 100  # node ids differ from site ids, as in a real deployment


def tiny_classify_config(data: Path, run: Path, **extra) -> dict:
    """configs/classify_tiny.toml, 2 steps per round, secure aggregation on."""
    config = tomllib.loads((REPO / "configs" / "classify_tiny.toml").read_text())
    config.update(
        {
            "data-dir": str(data),
            "run-dir": str(run),
            "secure-aggregation": True,
            "classify.max-steps-per-round": 2,
        }
    )
    config.update(extra)
    return config


class InProcessGrid:
    """``get_node_ids`` and ``send_and_receive`` over in-process sites."""

    def __init__(self, run_config: dict, num_sites: int) -> None:
        self.contexts = {
            NODE_BASE + k: Context(
                run_id=1,
                node_id=NODE_BASE + k,
                node_config={"partition-id": k, "num-partitions": num_sites},
                state=RecordDict(),
                run_config=dict(run_config),
            )
            for k in range(num_sites)
        }
        self.received: list[Message] = []
        self.lost: set[tuple[int, str, int]] = set()  # (round, action, site)
        self.kept: dict[int, dict[int, tuple[dict[str, torch.Tensor], int]]] = {}
        self.server_round = 0

    def get_node_ids(self) -> list[int]:
        return list(self.contexts)

    def send_and_receive(
        self, messages: Iterable[Message], timeout: float | None = None
    ) -> list[Message]:
        replies = []
        for msg in messages:
            config = msg.content.get("config")
            if config is not None and SERVER_ROUND in config:
                self.server_round = int(config[SERVER_ROUND])
            node = msg.metadata.dst_node_id
            reply = client_app(msg, self.contexts[node])
            action = msg.metadata.message_type.split(".")[-1]
            if action == "secagg_fit":
                self._snapshot(node)
            if (self.server_round, action, node - NODE_BASE) in self.lost:
                continue
            self.received.append(reply)
            replies.append(reply)
        return replies

    def _snapshot(self, node: int) -> None:
        """Remember the site's plaintext update of this round, if it accepted it."""
        state = self.contexts[node].state
        fit = state[FIT_STATE]
        if int(fit["accepted"]):
            update = record_to_state(state[UPDATE_STATE])
            self.kept.setdefault(self.server_round, {})[node - NODE_BASE] = (
                update,
                int(fit[NUM_EXAMPLES]),
            )

    def plain_inputs(
        self, server_round: int, sites: Iterable[int]
    ) -> tuple[list[dict[str, torch.Tensor]], list[int]]:
        """The plaintext updates and example counts of ``sites`` in a round."""
        kept = self.kept[server_round]
        return [kept[s][0] for s in sites], [kept[s][1] for s in sites]
