"""Held-out scoring of a run's per-round checkpoints (vertical federations).

Horizontal strategies score each aggregate on the held-out set as they go
(``heldout_evaluator`` in :mod:`server.server_app`). A vertical task runs its
own orchestration, which checkpoints the exchanged state every round; this
scores those checkpoints afterwards, so its run directory gets the same
``heldout`` rows, under the same metric names, as every other run.
"""

from __future__ import annotations

from safetensors.torch import load_file

from fedmed.runs import RunDirectory
from fedmed.tasks import Task


def score_checkpoints_heldout(
    task: Task, run: RunDirectory, first_round: int, last_round: int
) -> None:
    """Held-out scores of rounds ``first_round..last_round`` from their checkpoints.

    A vertical task trains through its own orchestration, which checkpoints
    the exchanged state every round; scoring those states here gives VFL runs
    the held-out rows (round 0: the initial model) horizontal runs get.
    """
    dataset = task.heldout_data()
    if dataset is None:
        return
    model = task.build_model()
    initial = {k: v.detach().clone() for k, v in task.exchanged(model).items()}
    for server_round in range(first_round, last_round + 1):
        path = run.checkpoints / f"round_{server_round}.safetensors"
        state = load_file(str(path)) if server_round > 0 else initial
        task.load_exchanged(model, state)
        metrics = task.evaluate_heldout(model, dataset)
        run.record_round(server_round, "heldout", metrics)
