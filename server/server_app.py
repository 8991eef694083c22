"""The ServerApp: read the run config, pick task and strategy, run, log, checkpoint."""

from __future__ import annotations

from collections.abc import Mapping
from logging import INFO
from typing import Any

from flwr.app import ArrayRecord, ConfigRecord, Context, MetricRecord
from flwr.serverapp import Grid, ServerApp
from flwr.supercore import log

from fedmed.comm.codecs import bytes_per_element
from fedmed.config import PlatformConfig, parse_platform
from fedmed.export import export_run
from fedmed.privacy.weighted_sum import check_secure_aggregation
from fedmed.report import check_run_outcome, plot_run, summarize
from fedmed.runs import RunDirectory
from fedmed.tasks import Task, get_task, list_tasks
from fedmed.wire import record_to_state, state_to_record
from server.heldout import score_checkpoints_heldout
from server.prompt_grid import prompt_replies
from strategies.adapter_fedavg import AdapterFedAvg
from strategies.dp import AdapterDPFixedClipping, check_differential_privacy

app = ServerApp()


def heldout_evaluator(task: Task, run: RunDirectory, round_offset: int):
    """Central evaluation of each aggregate on the global held-out set, if any."""
    dataset = task.heldout_data()
    if dataset is None:
        return None

    def evaluate(server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
        if server_round == 0 and round_offset > 0:
            return None  # already recorded before the run was resumed
        model = task.build_model()
        task.load_exchanged(model, record_to_state(arrays))
        metrics = task.evaluate_heldout(model, dataset)
        run.record_round(server_round + round_offset, "heldout", metrics)
        return MetricRecord({k: float(v) for k, v in metrics.items()})

    return evaluate


def model_bytes(task: Task, codec: str) -> tuple[int, int]:
    """(full model bytes, exchanged bytes) at the wire codec's element size."""
    model = task.build_model()
    size = bytes_per_element(codec)
    full = task.full_model_params(model) * size
    exchanged = sum(t.numel() for t in task.exchanged(model).values()) * size
    return full, exchanged


def initial_state(task: Task, run: RunDirectory, platform: PlatformConfig):
    """Fresh model state, or the last checkpoint when resuming."""
    if platform.resume and (found := run.latest_checkpoint()) is not None:
        last_round, state, _ = found
        run.truncate_metrics_after(last_round)
        log(INFO, "resuming %s after round %d", run.path, last_round)
        return state, last_round
    return task.exchanged(task.build_model()), 0


def horizontal_strategy(
    task: Task, run: RunDirectory, platform: PlatformConfig, round_offset: int
) -> AdapterFedAvg | AdapterDPFixedClipping:
    """AdapterFedAvg, wrapped in central DP or made secure when the run asks."""
    common = {
        "min_sites": platform.min_sites,
        "fraction_train": platform.fraction_train,
        "round_offset": round_offset,
    }
    bounds = {
        "max_examples": platform.max_examples_per_site,
        "max_update_norm": platform.max_update_norm,
        "timeout_s": platform.round_timeout_s,
        "evaluate_with_train": platform.evaluate_with_train,
        "last_round": platform.num_server_rounds,
    }
    if platform.differential_privacy:
        return AdapterDPFixedClipping(
            AdapterFedAvg(task, run, codec=platform.comm_dtype, **common, **bounds),
            noise_multiplier=platform.dp_noise_multiplier,
            clip_norm=platform.dp_clip_norm,
            delta=platform.dp_delta,
            sampling_rate=1.0,  # fraction-train < 1 is refused with DP
            rounds_done=round_offset,
        )
    if not platform.secure_aggregation:
        return AdapterFedAvg(task, run, codec=platform.comm_dtype, **common, **bounds)
    from strategies.secure_fedavg import SecureAdapterFedAvg  # loads only when asked

    return SecureAdapterFedAvg(
        task,
        run,
        value_range=platform.secagg_value_range,
        timeout=platform.round_timeout_s,
        **common,
    )


def dp_summary(
    strategy: AdapterDPFixedClipping, platform: PlatformConfig
) -> dict[str, float | None]:
    """What the run's DP guarantee is, for ``summary.json`` (None: no noise)."""
    epsilon = strategy.epsilon()
    return {
        "dp_epsilon": epsilon if epsilon != float("inf") else None,
        "dp_delta": platform.dp_delta,
        "dp_noise_multiplier": platform.dp_noise_multiplier,
        "dp_clip_norm": platform.dp_clip_norm,
    }


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Run ``num-server-rounds`` of federated training for the configured task."""
    grid = prompt_replies(grid)  # deployment: replies seen within 0.25 s, in order
    platform = parse_platform(context.run_config, list_tasks())
    task = get_task(context.run_config)
    # refuse before anything is written
    if platform.secure_aggregation and task.federation == "horizontal":
        check_secure_aggregation(task)
    if platform.differential_privacy:
        check_differential_privacy(task)
    run = RunDirectory(platform.run_dir)
    run.create(context.run_config, resume=platform.resume)
    state, offset = initial_state(task, run, platform)
    remaining = platform.num_server_rounds - offset
    if remaining > 0 and task.federation == "vertical":
        from strategies.vfl_clip import run_vertical  # its stack loads only for VFL

        run_vertical(
            grid,
            task,
            run,
            rounds=(offset + 1, platform.num_server_rounds),
            resume_from=state if offset else None,
            min_sites=platform.min_sites,
            timeout=platform.round_timeout_s,
            seed=task.seed,
        )
        score_checkpoints_heldout(
            task, run, 0 if offset == 0 else offset + 1, platform.num_server_rounds
        )
    privacy: dict[str, float | None] = {}
    if remaining > 0 and task.federation == "horizontal":
        strategy = horizontal_strategy(task, run, platform, offset)
        strategy.start(
            grid,
            state_to_record(state, platform.comm_dtype),
            num_rounds=remaining,
            timeout=platform.round_timeout_s,
            train_config=ConfigRecord(),
            evaluate_fn=heldout_evaluator(task, run, offset),
        )
        if isinstance(strategy, AdapterDPFixedClipping):
            privacy = dp_summary(strategy, platform)
    write_run_summary(run, task, platform, privacy)
    plot_run(run)
    if task.writes_artifacts and run.latest_checkpoint() is not None:
        export_run(run.path)  # the final adapters in the formats users load

    # fewer rounds than asked, or every site failed a phase: the run failed
    check_run_outcome(run, platform.num_server_rounds)


def write_run_summary(
    run: RunDirectory,
    task: Task,
    platform: PlatformConfig,
    privacy: Mapping[str, float | None],
) -> dict[str, Any]:
    """``summary.json``: the report's totals plus ``network``, what crossed the
    network in each phase (tensor names and bytes, metric names, statistic
    sizes, refused and failed replies: :class:`fedmed.runs.NetworkLedger`)."""
    full, exchanged = model_bytes(task, platform.comm_dtype)
    summary = summarize(
        run,
        full_model_bytes=full,
        exchanged_bytes=exchanged,
        extra={
            "task": task.name,
            "comm_dtype": platform.comm_dtype,
            "secure_aggregation": platform.secure_aggregation
            or task.always_secure_aggregation,
            **privacy,
            "network": run.network.summary(),
        },
    )
    run.write_summary(summary)
    return summary
