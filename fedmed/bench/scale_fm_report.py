"""Prose and figure of the ``scale-fm`` benchmark (shared frozen backbones)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

GPU_PENDING = (
    "GPU sharing (1, 4 and 8 sites per GPU, peak torch.cuda.max_memory_allocated "
    "and throughput for SAMBA ViT-B and SeLoRA SD v1.5): GPU figure pending, no "
    "GPU available to this project when this was measured."
)


def scale_fm_notes(rows: list[dict], detail: dict[str, Any]) -> str:
    """What was measured, what is derived, and the after/before figures."""
    lines = [
        "Random initialisation at the papers' architectures, CPU, one intra-op "
        "thread (a simulated site's share). Each task and mode runs in its own "
        "process serving two messages: message 1 gets a model and runs one local "
        "training step (site_step_s, batch: SAMBA 16 cached 64x64 image "
        "embeddings through prompt encoder + mask decoder; SeLoRA 2 images at "
        "224 px through VAE encoder, text encoder and U-Net with adapters; FPT 4 "
        "images, side network at 224 px with the frozen ViT-B run live at 512 px "
        "(preload off; with the paper's preloading the frozen ViT is not in the "
        "model at all); VFL-CLIP the knowledge provider's ViT-L/14 text tower on "
        "32 image embeddings). Message 2 gets a model: build_s_per_message is its "
        "wall time: 'before' = task.build_model(), 'after' = a private copy over "
        "the process's shared frozen backbone (fedmed.tasks.backbones). "
        "fixed_cost_pct = build_s_per_message / site_step_s, an upper bound on "
        "the fixed cost's share of a round (a round is at least one step).",
        "Measured: build_s_per_message, site_step_s, peak_rss_mb_per_actor "
        "(ru_maxrss after both messages), site_state_mb (trainable values x 3: "
        "parameter + Adam moments, fp32), backbone_mb (parameter bytes of the "
        "model). Derived for sites = 1, 10, 50 served by one actor: round_s = "
        "sites x (2 messages x build_s_per_message + site_step_s); the peak RSS "
        "of an actor does not grow with the sites it serves because each "
        "message's model is freed after its reply (the worker records RSS after "
        "message 1 and 2 in the run JSON's detail), so memory is one backbone per "
        "actor plus one message's adapter and optimizer state.",
        "Reading the figures: sharing removes the per-message build; it does not "
        "lower an actor's peak RSS here, because 'before' also frees each "
        "message's model and the peak is set by one model plus one training "
        "step's activations (SAMBA's batch of 16 decoder passes, SD's U-Net "
        "backward). What it removes is a second backbone alive while the next "
        "message builds its own, and the build's seconds. Both modes meet the "
        "memory target (one backbone per actor + one site's adapter and optimizer "
        "state). Timings come from a 2-core machine shared with other work: "
        "site_step_s of the same step differs by up to 2x between the two "
        "processes of a task, so compare build_s_per_message within a row pair "
        "and read the percentages as orders of magnitude.",
        GPU_PENDING,
    ]
    by_key = {(r["task"], r["mode"]): r for r in rows if r["sites"] == 1}
    for task in dict.fromkeys(r["task"] for r in rows):
        before, after = by_key.get((task, "before")), by_key.get((task, "after"))
        if before and after:
            lines.append(
                f"{task} ({after['model']}): {before['build_s_per_message']:.2f} s "
                f"-> {after['build_s_per_message']:.3f} s per message, "
                f"{before['fixed_cost_pct']:.1f} % -> {after['fixed_cost_pct']:.2f} % "
                f"of one local step ({after['site_step_s']:.2f} s)."
            )
    return "\n\n".join(lines)


def plot_scale_fm(rows: list[dict], detail: dict[str, Any], path: Path) -> Path:
    """Per-message fixed cost before/after per task, and peak RSS per actor."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    single = [r for r in rows if r["sites"] == 1]
    tasks = list(dict.fromkeys(r["task"] for r in single))
    fig, (cost, memory) = plt.subplots(1, 2, figsize=(12, 4.5))
    width = 0.38
    for offset, mode in ((-width / 2, "before"), (width / 2, "after")):
        values = {r["task"]: r for r in single if r["mode"] == mode}
        xs = [i + offset for i in range(len(tasks))]
        cost.bar(
            xs, [values[t]["build_s_per_message"] for t in tasks], width, label=mode
        )
        memory.bar(
            xs, [values[t]["peak_rss_mb_per_actor"] for t in tasks], width, label=mode
        )
    for ax, label in (
        (cost, "fixed cost per message (s)"),
        (memory, "peak RSS per actor (MB)"),
    ):
        ax.set_xticks(range(len(tasks)), tasks)
        ax.set_ylabel(label)
        ax.legend()
    cost.set_yscale("log")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
