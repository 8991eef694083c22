"""One site's round as the train handler runs it, and what it leaves behind.

The steps of ``clients.client_app.train_work`` (model from
:func:`clients.site.site_model`, load the aggregate, fit, exchanged tensors)
without the Flower message around them.

Used in-process (one process serving several sites, as a Ray actor does) and
as a script (``python -m tests.clients.site_round ARGS.json OUT.pt``: a fresh
process per site, the reference the shared process must reproduce).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from torch.optim.optimizer import register_optimizer_step_post_hook

from clients.site import site_model
from fedmed.tasks import get_task
from fedmed.wire import SERVER_ROUND


class OptimizerStates:
    """The state of the last optimizer that stepped (captured after each step)."""

    def __init__(self) -> None:
        self.last: dict = {}

    def __enter__(self) -> OptimizerStates:
        self._handle = register_optimizer_step_post_hook(self._capture)
        return self

    def __exit__(self, *exc) -> None:
        self._handle.remove()

    def _capture(self, optimizer, args, kwargs) -> None:
        state = optimizer.state_dict()["state"]
        self.last = {
            f"{index}.{name}": value.detach().clone()
            for index, slots in state.items()
            for name, value in slots.items()
            if torch.is_tensor(value)
        }


def initial_arrays(run_config: dict) -> dict[str, torch.Tensor]:
    """What the server sends in round 1: the task's initial exchanged tensors."""
    task = get_task(run_config)
    return task.exchanged(task.build_model())


def site_round(
    run_config: dict, site: int, num_sites: int, arrays: dict[str, torch.Tensor]
) -> dict[str, dict[str, torch.Tensor]]:
    """Train ``site`` for round 1 from ``arrays``; its reply and optimizer state."""
    task = get_task(run_config)
    node_config = {"partition-id": site, "num-partitions": num_sites}
    with OptimizerStates() as optimizer:
        model = site_model(task)
        task.load_exchanged(model, arrays)
        task.fit(model, task.site_data(node_config), {SERVER_ROUND: 1})
    trained = {k: v.detach().clone() for k, v in task.exchanged(model).items()}
    return {"trained": trained, "optimizer": optimizer.last}


def main() -> None:
    args = json.loads(Path(sys.argv[1]).read_text())
    arrays = torch.load(args["arrays"], weights_only=True)
    torch.save(
        site_round(args["run_config"], args["site"], args["num_sites"], arrays),
        sys.argv[2],
    )


if __name__ == "__main__":
    main()
