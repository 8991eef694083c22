"""Scripted fault injection for simulations and the fault benchmark.

A fault plan is a run-config string (Flower configs hold scalars only):
``"raise@1:2, nan@0:1, shape@2:*, sleep@1:3"`` means site 1 raises in round
2, site 0 sends NaN in round 1, site 2 sends a wrong-shape update in every
round, site 1 stalls past the round timeout in round 3. Kinds:

- ``raise``: the ClientApp raises (a crash);
- ``nan``: the update contains NaN;
- ``shape``: one tensor of the update has the wrong shape;
- ``sleep``: the ClientApp sleeps ``sleep-s`` seconds (a straggler/timeout);
- ``examples``: the reply claims :data:`INFLATED_EXAMPLES` examples (a site
  trying to make the aggregate its own update);
- ``unchanged``: the reply returns the model it received (a zero update).

The plan only says what to do; the ClientApp applies it. Nothing here runs
unless the run config names faults.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

FAULT_KINDS = ("raise", "nan", "shape", "sleep", "examples", "unchanged")
INFLATED_EXAMPLES = 1e18  # what an ``examples`` fault claims


class InjectedFault(RuntimeError):
    """Raised by a ClientApp on purpose, as scripted by a fault plan."""


@dataclass(frozen=True)
class Fault:
    """Fault ``kind`` at ``site`` in ``round`` (``None``: every round)."""

    kind: str
    site: int
    round: int | None


def parse_faults(spec: str) -> list[Fault]:
    """Parse ``kind@site:round`` items separated by commas."""
    faults = []
    for item in (part.strip() for part in spec.split(",")):
        if not item:
            continue
        try:
            kind, where = item.split("@")
            site, rnd = where.split(":")
            fault = Fault(
                kind.strip(), int(site), None if rnd.strip() == "*" else int(rnd)
            )
        except ValueError:
            raise ValueError(
                f"bad fault {item!r}: expected kind@site:round, "
                "e.g. 'nan@1:2' or 'raise@0:*'"
            ) from None
        if fault.kind not in FAULT_KINDS:
            raise ValueError(
                f"unknown fault kind {fault.kind!r}; known: {', '.join(FAULT_KINDS)}"
            )
        faults.append(fault)
    return faults


def faults_for(plan: list[Fault], site: int, server_round: int) -> set[str]:
    """Kinds of fault scripted for ``site`` in ``server_round``."""
    return {
        f.kind
        for f in plan
        if f.site == site and (f.round is None or f.round == server_round)
    }


def corrupt_update(state: dict[str, Tensor], kinds: set[str]) -> dict[str, Tensor]:
    """Apply ``nan`` / ``shape`` faults to an outgoing update."""
    state = dict(state)
    first = next(iter(state))
    if "nan" in kinds:
        poisoned = state[first].clone()
        poisoned.view(-1)[0] = float("nan")
        state[first] = poisoned
    if "shape" in kinds:
        state[first] = torch.zeros(*state[first].shape, 2)
    return state
