"""strategies/secure_fedavg.py with the real site handlers, in one process.

Three or four tiny classify sites (configs/classify_tiny.toml, 2 steps per
round) behind :class:`InProcessGrid`; each test runs the protocol in about a
second. Three parties (two neighbours each, threshold 2) cannot lose anyone,
so the dropout case runs four.
"""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import ArrayRecord, ConfigRecord
from flwr.supercore.task_identity import TaskIdentity
from safetensors.torch import load_file

from fedmed.comm.selection import UpdateRejected
from fedmed.data.synth_dermamnist import synthesize
from fedmed.privacy import SecureSum
from fedmed.privacy.messages import MaskedInput
from fedmed.privacy.weighted_sum import site_vector, update_codec
from fedmed.runs import RunDirectory
from fedmed.tasks import get_task
from fedmed.wire import NUM_EXAMPLES, state_to_record
from fedmed.wire.secagg import REJECTED, REPLY, from_record
from strategies.secagg_channel import SetupIncomplete
from strategies.secure_fedavg import SecureAdapterFedAvg
from tests.privacy.secagg_grid import InProcessGrid, tiny_classify_config

VALUE_RANGE = 1e9


@pytest.fixture(scope="module")
def derma(tmp_path_factory):
    out = tmp_path_factory.mktemp("derma")
    synthesize(out, num_sites=4, samples_per_site=60, heldout_samples=20)
    return out


@pytest.fixture(autouse=True)
def _inside_serverapp(monkeypatch):
    for field in ("_run_id", "_node_id", "_task_id"):  # as inside a running app
        monkeypatch.setattr(TaskIdentity, field, 1)


def federation(derma, tmp_path, sites=3, rounds=1, offset=0, grid=None, **config):
    """Run ``rounds`` secure rounds; return the grid, the run and the task."""
    run_config = tiny_classify_config(derma, tmp_path / "run", **config)
    task = get_task(run_config)
    run = RunDirectory(tmp_path / "run")
    run.create(run_config, resume=offset > 0)
    grid = grid or InProcessGrid(run_config, sites)
    strategy = SecureAdapterFedAvg(
        task,
        run,
        value_range=float(run_config.get("secagg-value-range", VALUE_RANGE)),
        fraction_train=float(run_config.get("fraction-train", 1.0)),
        round_offset=offset,
        timeout=1.0,
    )
    start = task.exchanged(task.build_model())
    if offset:
        start = run.latest_checkpoint()[1]
    strategy.start(grid, state_to_record(start, "fp32"), rounds, 1.0, ConfigRecord())
    return grid, run, task


def rows(run, phase):
    return {r["round"]: r for r in run.read_metrics() if r["phase"] == phase}


def checkpoint(run, round_id):
    return load_file(str(run.checkpoints / f"round_{round_id}.safetensors"))


def assert_weighted_mean(run, round_id, task, grid, sites, parties=3):
    """The round's aggregate is AdapterFedAvg's weighted mean of ``sites``."""
    states, weights = grid.plain_inputs(round_id, sites)
    plain = task.aggregate(states, weights)  # what AdapterFedAvg computes
    step = 1 / update_codec(VALUE_RANGE, parties).scale
    for key, value in checkpoint(run, round_id).items():
        bound = step + 2**-23 * plain[key].abs().max()  # one step + fp32 rounding
        assert (value.double() - plain[key].double()).abs().max() <= bound, key
    assert rows(run, "train")[round_id]["aggregated"][NUM_EXAMPLES] == sum(weights)


def test_secure_round_is_plain_fedavg_and_the_server_sees_only_masked_vectors(
    derma, tmp_path
):
    # Execute
    grid, run, task = federation(derma, tmp_path)
    # Assert: the aggregate
    assert_weighted_mean(run, 1, task, grid, [0, 1, 2])
    train = rows(run, "train")[1]
    assert train["status"] == "ok" and train["accepted"] == 3
    assert {"train_loss", "steps"} <= set(train["aggregated"])
    assert set(rows(run, "setup")[0]["sites"]) == {"0", "1", "2"}
    # Assert: nothing the server received holds a site's update or weight
    size = sum(v.numel() for v in checkpoint(run, 1).values())
    masked = []
    for reply in grid.received:
        for name, record in reply.content.items():
            if isinstance(record, ArrayRecord):  # protocol messages only
                assert name == REPLY, reply.metadata.message_type
            elif name == "metrics" and "secagg" in reply.metadata.message_type:
                assert NUM_EXAMPLES not in record
        fit = reply.metadata.message_type.endswith("secagg_fit")
        if fit and "masked" in reply.content[REPLY]:
            masked.append(from_record(MaskedInput, reply.content[REPLY]))
    assert len(masked) == 3
    codec = update_codec(VALUE_RANGE, 3)
    states, weights = grid.plain_inputs(1, [0, 1, 2])
    for message in masked:
        assert message.masked.size == size + 1 + 2 * 2  # update, n, 2 metrics
        plain = site_vector(
            states[message.sender], weights[message.sender], {}, (), size, 1e9
        )
        encoded = codec.encode(plain)
        assert np.mean(message.masked[:size] == encoded[:size]) < 0.01
        seen = codec.decode(message.masked)[:size]  # looks uniformly random
        assert np.abs(seen - plain[:size]).min() > 1.0


def test_dropouts_within_the_threshold_are_survived_beyond_it_the_round_fails(
    derma, tmp_path
):
    # Prepare: 4 sites, 3 neighbours each, threshold 2. Round 1: site 1's
    # masked input is lost. Round 2: those of sites 1 and 2. Round 3: site 0's
    # unmask reply is lost.
    run_config = tiny_classify_config(derma, tmp_path / "run")
    grid = InProcessGrid(run_config, 4)
    grid.lost = {
        (1, "secagg_fit", 1),
        (2, "secagg_fit", 1),
        (2, "secagg_fit", 2),
        (3, "secagg_unmask", 0),
    }
    # Execute
    grid, run, task = federation(derma, tmp_path, rounds=3, grid=grid)
    # Assert
    train = rows(run, "train")
    assert (train[1]["accepted"], train[1]["dropped"]) == (3, [1])
    assert_weighted_mean(run, 1, task, grid, [0, 2, 3], parties=4)
    assert train[2]["status"] == "failed" and train[2]["accepted"] == 0
    assert {r["site"] for r in train[2]["rejected"]} == {"1", "2"}
    assert not (run.checkpoints / "round_2.safetensors").exists()
    assert sorted(rows(run, "setup")) == [0]  # keys once per run, whatever drops
    assert train[3]["status"] == "ok" and train[3]["accepted"] == 4
    assert_weighted_mean(run, 3, task, grid, [0, 1, 2, 3], parties=4)


@pytest.mark.parametrize(
    ("config", "sites"),
    [
        ({"faults": "nan@1:1"}, ["1"]),
        ({"secagg-value-range": 1e-3}, ["0", "1", "2"]),
        ({"max-examples-per-site": 10}, ["0", "1", "2"]),  # each site has ~48
    ],
)
def test_sites_reject_their_own_bad_updates_which_count_for_nothing(
    derma, tmp_path, config, sites
):
    # Execute
    grid, run, task = federation(derma, tmp_path, **config)
    # Assert: named by site, with a generic reason that carries no numbers
    train = rows(run, "train")[1]
    assert sorted(r["site"] for r in train["rejected"]) == sites
    for rejection in train["rejected"]:
        assert rejection["reason"] == REJECTED
        assert not any(c.isdigit() for c in rejection["reason"])
    if len(sites) == 1:
        assert train["accepted"] == 2
        assert_weighted_mean(run, 1, task, grid, [0, 2])
    else:  # nothing was masked, nothing unmasked
        assert train["status"] == "skipped" and train["accepted"] == 0
        assert not (run.checkpoints / "round_1.safetensors").exists()


def test_a_resumed_run_keys_afresh_and_sampling_is_refused(derma, tmp_path):
    # Execute: round 1, then the run resumes for round 2 (a new ServerApp:
    # fresh key setup, round ids go on from the checkpoint)
    grid, run, task = federation(derma, tmp_path)
    federation(derma, tmp_path, offset=1, grid=grid)
    # Assert
    assert rows(run, "train")[2]["accepted"] == 3
    assert_weighted_mean(run, 2, task, grid, [0, 1, 2])
    assert sorted(rows(run, "setup")) == [0, 1]
    with pytest.raises(ValueError, match="fraction_train = 1"):
        SecureAdapterFedAvg(task, run, value_range=1e9, fraction_train=0.5)


def test_fewer_than_two_sites_are_refused(derma, tmp_path):
    # Prepare
    run_config = tiny_classify_config(derma, tmp_path / "run")
    task = get_task(run_config)
    run = RunDirectory(tmp_path / "run")
    strategy = SecureAdapterFedAvg(task, run, value_range=1e9, timeout=0.1)
    arrays = state_to_record(task.exchanged(task.build_model()), "fp32")
    # Execute / Assert
    with pytest.raises(SetupIncomplete, match="found 1 connected"):
        strategy.configure_train(
            1, arrays, ConfigRecord(), InProcessGrid(run_config, 1)
        )
    with pytest.raises(ValueError, match="min_sites >= 2"):
        SecureAdapterFedAvg(task, run, value_range=1e9, min_sites=1)


def test_evaluation_is_summed_securely_and_no_site_metric_reaches_the_server(
    derma, tmp_path
):
    # Execute
    grid, run, task = federation(derma, tmp_path)
    # Assert: pooled metrics from the unmasked sum over all three sites
    evaluation = rows(run, "evaluate")[1]
    aggregated = evaluation["aggregated"]
    assert evaluation["contributors"] == 3
    assert 0.0 <= aggregated["pooled_auc"] <= 1.0
    assert 0.0 <= aggregated["pooled_accuracy"] <= 1.0
    assert {"accuracy", "auc", "loss", NUM_EXAMPLES} <= set(aggregated)
    # Assert: an evaluate reply holds only the masked vector
    replies = [
        r for r in grid.received if r.metadata.message_type.endswith("secagg_evaluate")
    ]
    assert len(replies) == 3
    assert all(set(r.content.keys()) == {REPLY} for r in replies)


def test_sites_clip_their_update_norm_before_masking(derma, tmp_path):
    # Prepare: a bound far below a 2-step update's distance from the start
    bound = 1e-4
    run_config = tiny_classify_config(derma, tmp_path / "run")
    task = get_task(run_config)
    start = task.exchanged(task.build_model())
    # Execute
    grid, run, task = federation(derma, tmp_path, **{"max-update-norm": bound})
    # Assert: each masked update is within the bound; the mean is theirs
    states, _ = grid.plain_inputs(1, [0, 1, 2])
    for state in states:
        distance = sum(
            float(((state[k].double() - start[k].double()) ** 2).sum()) for k in start
        )
        assert distance**0.5 <= bound * (1 + 1e-3)
    assert_weighted_mean(run, 1, task, grid, [0, 1, 2])
    assert rows(run, "train")[1]["accepted"] == 3


def test_a_sum_claiming_more_examples_than_the_cap_allows_is_refused(derma, tmp_path):
    # Prepare: a site that skipped its own check claimed 1e18 examples
    run_config = tiny_classify_config(derma, tmp_path / "run")
    task = get_task({**run_config, "max-examples-per-site": 1000})
    strategy = SecureAdapterFedAvg(
        task, RunDirectory(tmp_path / "run"), value_range=1e30
    )
    strategy.reference = task.exchanged(task.build_model())
    size = sum(v.numel() for v in strategy.reference.values())
    values = np.zeros(size + 1)
    honest, cheated = values.copy(), values.copy()
    honest[size], cheated[size] = 2000.0, 1e18
    # Execute / Assert
    strategy._check_weight(SecureSum(1, honest, (0, 1), ()), ())
    with pytest.raises(UpdateRejected, match="max-examples-per-site"):
        strategy._check_weight(SecureSum(1, cheated, (0, 1), ()), ())
