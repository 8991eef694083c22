"""Run figures: one panel per metric family, settings side by side, traffic split."""

from fedmed.report import print_report
from fedmed.run_plots import communication_figure, metric_family, metrics_figure
from fedmed.runs import RunDirectory


def _records(trained: bool = True) -> list[dict]:
    rows = [
        {"round": 0, "phase": "heldout", "aggregated": {"auc": 0.5, "accuracy": 0.2}}
    ]
    for k in (1, 2):
        rows.append(
            {
                "round": k,
                "phase": "train",
                "status": "ok" if trained else "skipped",
                "sites": {},
                "aggregated": {"loss": 2.0 / k},
                "bytes_up": 1_000_000,
                "bytes_down": 2_000_000,
            }
        )
        rows.append(
            {
                "round": k,
                "phase": "evaluate",
                "sites": {
                    "0": {"auc": 0.6, "accuracy": 0.3, "loss": 1.5, "bytes_up": 10},
                    "1": {"auc": 0.7, "accuracy": 0.4, "loss": 1.2, "bytes_up": 10},
                },
                "aggregated": {"auc": 0.65, "accuracy": 0.35, "loss": 1.3},
                "bytes_up": 24_000_000,
                "bytes_down": 2_000_000,
            }
        )
        rows.append(
            {"round": k, "phase": "heldout", "aggregated": {"auc": 0.6 + k / 10}}
        )
        for phase in ("local", "pooled"):
            rows.append(
                {
                    "round": k,
                    "phase": phase,
                    "aggregated": {"auc": 0.6, "accuracy": 0.3},
                }
            )
    return rows


def _series(ax) -> dict[str, int]:
    labels: dict[str, int] = {}
    for line in ax.get_lines():
        labels[line.get_label()] = len(line.get_xdata())
    return labels


def test_families_group_metric_names():
    assert [metric_family(n) for n in ("pooled_auc", "dice_et", "hd95_wt", "acc")] == [
        "AUC",
        "Dice",
        "HD95",
        "accuracy",
    ]


def test_one_panel_per_metric_family_with_settings_in_the_same_panel():
    # Execute
    fig = metrics_figure(_records())
    # Assert: three families, three visible panels
    axes = {ax.get_title(): ax for ax in fig.axes if ax.get_visible()}
    assert set(axes) == {"AUC", "accuracy", "loss"}
    auc = _series(axes["AUC"])
    assert auc["federated (held-out)"] == 3  # rounds 0, 1, 2
    assert auc["federated (site tests)"] == 2
    assert auc["local-only (mean of sites)"] == 2 and auc["pooled"] == 2
    faint = [
        line for line in axes["AUC"].get_lines() if line.get_label().startswith("site ")
    ]
    assert len(faint) == 2 and all(line.get_alpha() < 0.5 for line in faint)
    assert "pooled" not in _series(axes["loss"])
    assert fig._suptitle is None


def test_a_run_that_trained_nothing_says_so_in_red():
    fig = metrics_figure(_records(trained=False))
    assert "NO ROUND COMPLETED" in fig._suptitle.get_text()
    assert fig._suptitle.get_color() == "red"


def test_communication_is_split_by_phase_and_direction_per_round():
    # Execute
    fig = communication_figure(_records())
    bars = fig.axes[0]
    # Assert: one bar series per (phase, direction), heights in MB per round
    groups = {
        c.get_label(): [p.get_height() for p in c.patches] for c in bars.containers
    }
    assert groups == {
        "evaluate server→site": [2.0, 2.0],
        "evaluate site→server": [24.0, 24.0],
        "train server→site": [2.0, 2.0],
        "train site→server": [1.0, 1.0],
    }


def test_report_of_a_partial_run_shows_sites_and_says_it_did_not_finish(tmp_path):
    # Prepare: a run killed before summary.json
    run = RunDirectory(tmp_path)
    for row in _records():
        run.append_metrics(row)
    from rich.console import Console

    console = Console(record=True, width=120)
    # Execute
    print_report(run, console)
    # Assert
    text = console.export_text()
    assert "per-site evaluation, round 2" in text and "site 1" in text
    assert "summary.json missing" in text
