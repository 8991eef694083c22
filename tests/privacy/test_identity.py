"""Replies are attributed by authenticated node id, never by the ``site-id`` a
site writes (strategies/identity.py), in deployment, simulation and fallback."""

from __future__ import annotations

import pytest
from flwr.server.superlink.fleet.vce.vce_api import _register_nodes
from flwr.server.superlink.linkstate import LinkStateFactory
from flwr.supercore.constant import FLWR_IN_MEMORY_DB_NAME
from flwr.supercore.object_store import ObjectStoreFactory
from flwr.superlink.federation import NoOpFederationManager
from flwr.superlink.grid import InMemoryGrid

from fedmed.deploy.registry import REGISTRY_ENV, SiteRecord, SiteRegistry
from fedmed.wire import record_to_state, state_to_record
from strategies.adapter_fedavg import AdapterFedAvg
from strategies.identity import SiteIdentity, directory_for
from tests.privacy.scripted_sites import ScriptedGrid, honest, lost
from tests.strategies.conftest import (  # noqa: F401 - fixtures
    _inside_serverapp,
    reference_state,
    run,
    task,
)

NODE = 100


def start(strategy, grid, rounds=1):
    initial = state_to_record(reference_state(), "fp32")
    result = strategy.start(grid, initial, num_rounds=rounds, timeout=5.0)
    return record_to_state(result.arrays)


def rows(run, phase):  # noqa: F811 - the fixture
    return [r for r in run.read_metrics() if r["phase"] == phase]


@pytest.fixture
def registry(tmp_path, monkeypatch) -> SiteRegistry:
    """A deployment's register: nodes 100, 101, 102 are hospitals a, b, c."""
    register = SiteRegistry(tmp_path / "sites.json")
    for k, name in enumerate(("hospital-a", "hospital-b", "hospital-c")):
        register.add(SiteRecord(name, f"key-{k}", f"SHA256:{k}", NODE + k))
    monkeypatch.setenv(REGISTRY_ENV, str(register.path))
    return register


def test_a_spoofed_site_id_is_attributed_to_the_authenticated_site(
    task,  # noqa: F811
    run,  # noqa: F811
    registry,
):
    # Prepare: node 101 (hospital-b) writes site-id 0, hospital-a's number,
    # in every reply, with a different update and loss than hospital-a
    strategy = AdapterFedAvg(task, run, min_sites=2)
    grid = ScriptedGrid({NODE: honest(0, 1.0), NODE + 1: honest(0, 3.0, examples=30)})
    # Execute
    start(strategy, grid, rounds=2)
    # Assert: each reply stays with the site its node id is registered to
    for row in rows(run, "train") + rows(run, "evaluate"):
        assert set(row["sites"]) == {"hospital-a", "hospital-b"}
        assert row["rejected"] == []
    train = rows(run, "train")[0]
    assert train["sites"]["hospital-a"]["num-examples"] == 10.0
    assert train["sites"]["hospital-b"]["num-examples"] == 30.0


def test_a_superlink_error_is_named_as_the_destination_site(
    task,  # noqa: F811
    run,  # noqa: F811
    registry,
):
    # Prepare: the SuperLink lost hospital-c (node 102): Flower's own error
    # reply comes from node 1 and answers the message sent to node 102
    strategy = AdapterFedAvg(task, run, min_sites=2)
    grid = ScriptedGrid(
        {NODE: honest(0, 1.0), NODE + 1: honest(1, 3.0), NODE + 2: lost}
    )
    # Execute
    start(strategy, grid)
    # Assert
    errors = [r for r in grid.received if r.has_error()]
    assert len(errors) == 2 and {r.metadata.src_node_id for r in errors} == {1}
    for row in rows(run, "train") + rows(run, "evaluate"):
        assert [r["site"] for r in row["rejected"]] == ["hospital-c"]
        assert "node-1" not in row["sites"] and "node-1" not in str(row["rejected"])
    assert run.network.summary()["train"]["failed"] == 1


def test_a_silent_site_is_named_and_counted_as_failed(
    task,  # noqa: F811
    run,  # noqa: F811
    registry,
):
    # Prepare: hospital-b never answers
    strategy = AdapterFedAvg(task, run, min_sites=1)
    grid = ScriptedGrid({NODE: honest(0, 1.0), NODE + 1: lambda msg: None})
    # Execute
    start(strategy, grid)
    # Assert
    [row] = rows(run, "train")
    assert row["rejected"] == [{"site": "hospital-b", "reason": "no reply (timeout)"}]
    assert row["sites"]["hospital-a"]["bytes_up"] > 0


def _simulation_grid(num_nodes: int) -> tuple[InMemoryGrid, dict[int, int]]:
    """Flower's simulation link state with its nodes registered as the
    simulation registers them; the true node -> partition map it returns."""
    factory = LinkStateFactory(
        FLWR_IN_MEMORY_DB_NAME, NoOpFederationManager(), ObjectStoreFactory()
    )
    mapping = _register_nodes(num_nodes, factory)
    return InMemoryGrid(state_factory=factory), mapping


def test_simulation_sites_are_named_by_partition_id(monkeypatch):
    # Prepare: 20 simulated nodes with random node ids
    monkeypatch.delenv(REGISTRY_ENV, raising=False)
    grid, mapping = _simulation_grid(20)
    # Execute
    identity = SiteIdentity(directory_for(grid))
    labels = {node: identity.of_node(node) for node in mapping}
    # Assert: what Flower gave each node as its partition id
    assert identity.source == "partition-id"
    assert labels == {node: str(partition) for node, partition in mapping.items()}
    assert sorted(mapping) != list(mapping)  # ids are not in partition order


def test_simulation_ignores_a_spoofed_site_id(task, run, monkeypatch):  # noqa: F811
    # Prepare: partition 1 claims site-id 0 in every reply
    monkeypatch.delenv(REGISTRY_ENV, raising=False)
    sim, mapping = _simulation_grid(2)
    node_of = {partition: node for node, partition in mapping.items()}

    class SimulationGrid(ScriptedGrid, InMemoryGrid):
        state = sim.state

    grid = SimulationGrid({node_of[0]: honest(0, 1.0), node_of[1]: honest(0, 3.0)})
    strategy = AdapterFedAvg(task, run, min_sites=2)
    # Execute
    start(strategy, grid)
    # Assert
    [row] = rows(run, "train")
    assert set(row["sites"]) == {"0", "1"} and row["rejected"] == []


def test_without_an_authenticated_source_a_first_claim_is_pinned(
    task,  # noqa: F811
    run,  # noqa: F811
    monkeypatch,
):
    # Prepare: no register, no simulation. Round 1: node 100 claims site 0,
    # node 101 site 1 (both pinned). Round 2: node 100 claims site 1 and
    # node 101 site 0: each swaps to the other's name
    monkeypatch.delenv(REGISTRY_ENV, raising=False)

    def swapping(first: int, then: int):
        def answer(msg):
            claim = first if msg.content["config"]["server-round"] == 1 else then
            return honest(claim, 1.0)(msg)

        return answer

    strategy = AdapterFedAvg(task, run, min_sites=1)
    grid = ScriptedGrid({NODE: swapping(0, 1), NODE + 1: swapping(1, 0)})
    # Execute
    start(strategy, grid, rounds=2)
    # Assert: round 1 as claimed; round 2 refused under the pinned names
    assert strategy.identity.source == "first-claim"
    first, second = rows(run, "train")
    assert set(first["sites"]) == {"0", "1"} and first["rejected"] == []
    assert sorted(r["site"] for r in second["rejected"]) == ["0", "1"]
    assert all("site-id differs" in r["reason"] for r in second["rejected"])
    assert second["sites"] == {} and second["status"] == "skipped"
