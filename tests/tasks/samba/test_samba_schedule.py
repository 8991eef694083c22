"""SAMBA's epoch budgets are totals over a run: decoder epochs sum to the paper's
15 / 50 over R rounds, the voting net trains once, the localizer's epochs add up."""

from __future__ import annotations

import pytest

import fedmed.tasks.samba.task as samba_task
from fedmed.tasks.registry import get_task
from fedmed.tasks.samba.config import SambaConfig
from fedmed.tasks.samba.schedule import epoch_share, round_plan
from fedmed.tasks.samba.train import DecoderReport
from fedmed.tasks.samba.voting import VotingReport


@pytest.mark.parametrize("total", [0, 1, 2, 15, 50, 150])
@pytest.mark.parametrize("parts", [1, 2, 3, 7, 20, 60])
def test_epoch_shares_sum_to_the_total_and_differ_by_at_most_one(total, parts):
    # Execute
    shares = [epoch_share(total, part, parts) for part in range(1, parts + 1)]
    # Assert
    assert sum(shares) == total
    assert max(shares) - min(shares) <= 1
    assert epoch_share(total, parts + 1, parts) == 0
    assert epoch_share(total, 0, parts) == 0


@pytest.mark.parametrize(("variant", "budget"), [("binary", 15), ("mc", 50)])
@pytest.mark.parametrize("rounds", [1, 2, 3, 10, 60])
def test_papers_decoder_epochs_are_spent_once_over_the_run(variant, budget, rounds):
    # Prepare: samba.epochs = 0 selects the paper's budget
    cfg = SambaConfig(variant=variant, epochs=0, localizer="local")
    # Execute
    plans = [round_plan(cfg, r, rounds) for r in range(1, rounds + 1)]
    # Assert
    assert sum(p.decoder_epochs for p in plans) == budget
    assert [p.train_voting for p in plans] == [False] * (rounds - 1) + [True]
    assert sum(p.localizer_epochs for p in plans) == cfg.yolo_epochs == 150
    if rounds > 1:  # the last round trains the voting net on the final decoder
        assert plans[-1].decoder_epochs == 0


def test_without_voting_every_round_trains_the_decoder():
    # Prepare
    cfg = SambaConfig(epochs=15, voting=False)
    # Execute
    plans = [round_plan(cfg, r, 3) for r in (1, 2, 3)]
    # Assert
    assert [p.decoder_epochs for p in plans] == [5, 5, 5]
    assert not any(p.train_voting for p in plans)
    assert all(p.localizer_epochs == 0 for p in plans)  # localizer off


def test_rounds_past_the_run_train_nothing():
    # Prepare
    cfg = SambaConfig(epochs=15, localizer="federated")
    # Execute
    plan = round_plan(cfg, 4, 3)
    # Assert
    assert (plan.decoder_epochs, plan.train_voting, plan.localizer_epochs) == (
        0,
        False,
        0,
    )


def test_task_fit_over_three_rounds_spends_the_budget_and_votes_once(
    phantoms, monkeypatch
):
    # Prepare: record what the task asks the trainers for, without training
    decoder_epochs: list[int] = []
    voting_rounds: list[int] = []
    current_round = [0]

    def spy_decoder(sam, samples, cfg, lr, epochs, rng):
        decoder_epochs.append(epochs)
        return DecoderReport(0.5, len(samples), epochs)

    def spy_voting(net, train, val, cfg, rng, device):
        voting_rounds.append(current_round[0])
        return VotingReport(0.5, None, 1)

    monkeypatch.setattr(samba_task, "train_decoder", spy_decoder)
    monkeypatch.setattr(samba_task, "train_voting", spy_voting)
    task = get_task(
        {
            "task.name": "samba",
            "samba.sam-model": "tiny",
            "samba.views": "z",
            "samba.modalities": "flair,t1,t2",
            "samba.encoder-batch-size": 32,
            "data-dir": str(phantoms),
            "num-server-rounds": 3,
            "seed": 0,
        }
    )
    data = task.site_data({"partition-id": 0, "num-partitions": 2})
    model = task.build_model()
    # Execute
    metrics = []
    for server_round in (1, 2, 3):
        current_round[0] = server_round
        result = task.fit(model, data, {"server-round": server_round})
        metrics.append(result.metrics)
    # Assert: binary SAMBA's 15 decoder epochs over rounds 1-2, voting in round 3
    assert decoder_epochs == [7, 8, 0]
    assert sum(decoder_epochs) == 15
    assert voting_rounds == [3]
    assert [m["decoder_epochs"] for m in metrics] == [7.0, 8.0, 0.0]
    assert "voting_dice_loss" in metrics[2]
    assert not any("voting_dice_loss" in m for m in metrics[:2])
