"""VFL-CLIP through `fedmed simulate`: the vertical protocol over Flower messages.

3 image providers + 1 knowledge provider on synthetic DermaMNIST with the
tiny random CLIP. The Flower run must produce exactly the context vectors of
the in-process protocol (same secure sums, same Adam steps), learn, count
bytes, keep only byte counts per site in the server's records, survive an
image provider failing before masking, and refuse a single image provider.
With two knowledge providers the server checkpoints only their securely
averaged text features, which equal centralised mean-of-towers training.
"""

import json
import subprocess
import tomllib

import pytest
import torch
from safetensors.torch import load_file

import fedmed.tasks.vfl_clip  # noqa: F401  (registers "vfl-clip")
from fedmed.commands import simulate_command
from fedmed.tasks.registry import get_task
from fedmed.tasks.vfl_clip.protocol import run_vfl_inprocess
from fedmed.tasks.vfl_clip.train import train_centralised
from tests.contracts import check_contract
from tests.e2e.test_method_simulations import REPO

pytestmark = pytest.mark.e2e
TINY = REPO / "configs" / "vfl_clip_tiny.toml"


def simulate(run, data, sites: int, rounds: int, sets=(), extra=()) -> dict:
    """`fedmed simulate --task vfl-clip` with the tiny config; contract-checked."""
    cmd = simulate_command(
        "vfl-clip", run, data, sites, rounds, TINY, sets, extra=extra
    )
    subprocess.run(cmd, check=True, cwd=REPO, timeout=600)
    check_contract("run", run)
    return json.loads((run / "summary.json").read_text())


def rows(run, phase: str) -> list[dict]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, filter(None, lines)) if r["phase"] == phase]


def inprocess_context(data, rounds: int, dropouts=None, sites: int = 4) -> torch.Tensor:
    """The knowledge provider's context after the in-process protocol (image
    providers are partitions 0..sites-2, the knowledge provider the last)."""
    task = get_task({**tomllib.loads(TINY.read_text()), "data-dir": str(data)})
    nodes = [{"partition-id": k, "num-partitions": sites} for k in range(sites - 1)]
    providers = [task.image_provider(node) for node in nodes]
    knowledge = task.knowledge_provider()
    run_vfl_inprocess(task.cfg, knowledge, providers, rounds, dropouts=dropouts)
    return knowledge.model.prompt_learner.ctx.detach()


def checkpoint_context(run, round_id: int) -> torch.Tensor:
    state = load_file(str(run / "checkpoints" / f"round_{round_id}.safetensors"))
    return state["prompt_learner.ctx"]


def test_vfl_clip_federation_equals_inprocess_protocol_and_learns(tmp_path):
    # Prepare
    run, data = tmp_path / "run", tmp_path / "data"
    # Execute
    summary = simulate(run, data, sites=4, rounds=30)
    # Assert: exactly the in-process protocol's (= centralised CoOp's) context
    torch.testing.assert_close(
        checkpoint_context(run, 30), inprocess_context(data, 30), rtol=0, atol=1e-6
    )
    evaluations = [r["aggregated"] for r in rows(run, "evaluate")]
    assert summary["rounds_completed"] == 30 and len(evaluations) == 30
    assert evaluations[-1]["pooled_auc"] > max(0.6, evaluations[0]["pooled_auc"] + 0.1)
    train = rows(run, "train")
    assert all(r["bytes_up"] > 0 and r["bytes_down"] > 0 for r in train)
    assert train[0]["accepted"] == 3 and summary["total_bytes_up"] > 0
    # The server records byte counts per site, never a provider's values.
    for record in train + rows(run, "evaluate"):
        assert set(record["sites"]) <= {"0", "1", "2", "knowledge"}
        assert all(
            set(v) == {"bytes_up", "bytes_down"} for v in record["sites"].values()
        )
    assert (run / "plots" / "confusion_matrix.png").stat().st_size > 1000


@pytest.mark.slow  # ~75 s: a 6-round federation with both baselines
def test_vfl_run_report_compares_like_with_like(tmp_path):
    # Prepare: 3 image providers + 1 knowledge provider, mini-batches of 64
    # (epochs of 2 rounds per provider), baselines on
    run, data = tmp_path / "run", tmp_path / "data"
    cmd = simulate_command(
        "vfl-clip",
        run,
        data,
        4,
        6,
        TINY,
        sets=["vfl-clip.batch-size=64"],
        compare=True,
    )
    # Execute
    subprocess.run(cmd, check=True, cwd=REPO, timeout=600)
    # Assert: the VFL run always aggregates securely and is scored on held-out
    check_contract("run", run)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["secure_aggregation"] is True
    heldout = rows(run, "heldout")
    assert [r["round"] for r in heldout] == list(range(7))
    comparison = summary["comparison"]
    federated = comparison["federated"]
    pooled = comparison["pooled"]
    local = comparison["local (mean of sites)"]
    assert federated == heldout[-1]["aggregated"]
    # same names, same test set
    assert set(federated) == set(pooled) == set(local)
    assert {"auc", "acc", "acc_macro", "num_examples"} <= set(federated)
    assert federated["num_examples"] == pooled["num_examples"] == local["num_examples"]
    # same data and budget: centralised CoOp on the providers' pooled data
    # gives the federated numbers (up to secure aggregation's rounding)
    for name in ("auc", "acc", "acc_macro"):
        assert pooled[name] == pytest.approx(federated[name], abs=2e-3), name
    baseline_rows = rows(run, "pooled")
    assert [r["round"] for r in baseline_rows] == list(range(1, 7))


@pytest.mark.slow  # ~50 s: a second simulation
def test_provider_failing_before_masking_leaves_and_the_sum_stays_exact(tmp_path):
    # Prepare: image provider 1 of 4 crashes when asked to mask in round 2 only (with
    # 3 image providers no one can drop: each survivor would keep 1 neighbour,
    # below the sites' threshold floor of 2)
    run, data = tmp_path / "run", tmp_path / "data"
    # Execute
    simulate(run, data, sites=5, rounds=3, sets=["faults=raise@1:2"])
    # Assert
    train = rows(run, "train")
    assert [r["accepted"] for r in train] == [4, 3, 4]  # it rejoins in round 3
    assert train[1]["dropped"] == [1] and train[1]["rejected"][0]["site"] == "1"
    torch.testing.assert_close(
        checkpoint_context(run, 3),
        inprocess_context(data, 3, dropouts={2: [1]}, sites=5),
        rtol=0,
        atol=1e-6,
    )


@pytest.mark.slow  # ~100 s: three simulations
def test_resume_restarts_the_knowledge_provider_from_the_checkpointed_context(
    tmp_path,
):
    # Prepare: 2 rounds, then resume the same run directory to 3 rounds
    run, data = tmp_path / "run", tmp_path / "data"
    simulate(run, data, sites=4, rounds=2)
    # Execute
    summary = simulate(run, data, sites=4, rounds=3, extra=["--resume"])
    # Assert: round 3 starts from round 2's context, so its loss is the loss of
    # an uninterrupted run's round 3 (Adam moments restart only afterwards).
    train = rows(run, "train")
    assert [r["round"] for r in train] == [1, 2, 3]
    assert summary["rounds_completed"] == 3
    straight = tmp_path / "straight"
    simulate(straight, data, sites=4, rounds=3)
    expected = rows(straight, "train")[2]["aggregated"]["train_loss"]
    assert train[2]["aggregated"]["train_loss"] == pytest.approx(expected, rel=1e-9)


@pytest.mark.slow
def test_single_image_provider_refuses_to_start(tmp_path):
    # Prepare: 2 sites = 1 knowledge provider + 1 image provider
    cmd = simulate_command(
        "vfl-clip", tmp_path / "run", tmp_path / "data", 2, 1, run_config=TINY
    )
    # Execute
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    # Assert
    assert done.returncode != 0
    assert "needs at least 2 image providers, found 1" in done.stdout + done.stderr
    assert not rows_exist(tmp_path / "run", "train")


def two_knowledge_reference(data, rounds: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean text features after the in-process K=2 protocol, and after
    centralised training of the mean-of-towers model on the pooled data."""
    config = {**tomllib.loads(TINY.read_text()), "data-dir": str(data)}
    task = get_task({**config, "vfl-clip.knowledge-providers": 2})
    nodes = [{"partition-id": k, "num-partitions": 5} for k in range(3)]
    providers = [task.image_provider(node) for node in nodes]
    knowledge = task.knowledge_providers()
    run_vfl_inprocess(task.cfg, knowledge, providers, rounds)
    reference = task.build_model()
    embeddings = torch.cat([p.train.tensors()[0] for p in providers])
    labels = torch.cat([p.train.tensors()[1] for p in providers])
    train_centralised(reference, embeddings, labels, rounds, lr=task.cfg.lr)
    with torch.no_grad():
        federated = torch.stack([k.model() for k in knowledge]).mean(dim=0)
        return federated, reference()


@pytest.mark.slow  # ~70 s: a five-node simulation
def test_two_knowledge_providers_over_flower_equal_centralised_mean_of_towers(
    tmp_path,
):
    # Prepare: 5 nodes = 3 image providers + 2 knowledge providers
    run, data = tmp_path / "run", tmp_path / "data"
    sets = ["vfl-clip.knowledge-providers=2"]
    # Execute
    summary = simulate(run, data, sites=5, rounds=4, sets=sets)
    # Assert: the server checkpoints the mean text features only, and they are
    # the in-process protocol's and centralised mean-of-towers training's
    state = load_file(str(run / "checkpoints" / "round_4.safetensors"))
    assert set(state) == {"text_features", "logit_scale"}
    inprocess, central = two_knowledge_reference(data, 4)
    start = get_task(
        {**tomllib.loads(TINY.read_text()), "vfl-clip.knowledge-providers": 2}
    ).build_model()
    with torch.no_grad():
        moved = float((start() - central).abs().max())
    assert moved > 1e-3  # it trained
    torch.testing.assert_close(state["text_features"], inprocess, rtol=0, atol=1e-5)
    torch.testing.assert_close(state["text_features"], central, rtol=1e-4, atol=1e-4)
    assert summary["rounds_completed"] == 4
    train = rows(run, "train")
    assert [r["accepted"] for r in train] == [3, 3, 3, 3]
    # byte counts per party; each knowledge provider under its own label
    for record in train + rows(run, "evaluate"):
        assert set(record["sites"]) <= {"0", "1", "2", "knowledge-0", "knowledge-1"}
    assert {"knowledge-0", "knowledge-1"} <= set(train[0]["sites"])
    assert [r["round"] for r in rows(run, "heldout")] == list(range(5))


def rows_exist(run, phase: str) -> bool:
    return (run / "metrics.jsonl").exists() and bool(rows(run, phase))
