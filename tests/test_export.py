"""fedmed.export: any checkpoint of a run re-exported as adapters users can load."""

import json
import tomllib
from pathlib import Path

import pytest
import torch
from diffusers import StableDiffusionPipeline

from fedmed.data.synth_cxr import REPORT_WORDS
from fedmed.export import export_run
from fedmed.runs import RunDirectory
from fedmed.tasks import get_task
from fedmed.tasks.selora.aggregation import lora_pairs, state_ranks
from fedmed.tasks.selora.backbone import tiny_backbone

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def tiny_config(name: str) -> dict:
    return tomllib.loads((CONFIGS / f"{name}_tiny.toml").read_text())


def grown_state(state: dict, seed: int) -> dict:
    """Ranks 1..3 across layers with non-zero B: an aggregate after some growth."""
    generator = torch.Generator().manual_seed(seed)
    grown = dict(state)
    for i, (a_key, b_key) in enumerate(sorted(lora_pairs(state).values())):
        rank = 1 + i % 3
        grown[a_key] = torch.randn(rank, state[a_key].shape[1], generator=generator)
        grown[b_key] = 0.05 * torch.randn(
            state[b_key].shape[0], rank, generator=generator
        )
    return grown


@pytest.fixture
def selora_run(tmp_path):
    """A SeLoRA run directory with checkpoints of rounds 1 (rank 1) and 2 (grown)."""
    config = tiny_config("selora")
    task = get_task(config)
    initial = task.exchanged(task.build_model())
    run = RunDirectory(tmp_path / "run")
    run.create(config)
    run.save_checkpoint(1, initial, {"codec": "fp32"})
    final = grown_state(initial, seed=0)
    run.save_checkpoint(2, final, {"codec": "fp32"})
    return run.path, task, final


def pipeline_for(task) -> StableDiffusionPipeline:
    cfg = task.cfg
    parts = tiny_backbone(
        REPORT_WORDS,
        cfg.tiny_width,
        cfg.resolution,
        cfg.max_tokens,
        cfg.tiny_vae,
        task.seed,
    )
    return parts.pipeline()


@torch.no_grad()
def noise_prediction(text_encoder, unet, ids):
    latents = torch.randn(2, 4, 16, 16, generator=torch.Generator().manual_seed(0))
    context = text_encoder(ids)[0]
    return unet(latents, torch.tensor([3, 700]), encoder_hidden_states=context).sample


def test_last_checkpoint_exports_adapters_that_diffusers_loads(selora_run):
    # Prepare
    run_dir, task, final = selora_run
    model = task.build_model()
    task.load_exchanged(model, final)
    ids = model.tokenize(["heart size normal", "effusion"])
    expected = noise_prediction(model.text_encoder, model.unet, ids)
    # Execute
    written = export_run(run_dir)
    pipeline = pipeline_for(task)
    pipeline.load_lora_weights(str(run_dir / "adapters" / "diffusers"))
    loaded = noise_prediction(pipeline.text_encoder, pipeline.unet, ids)
    # Assert
    adapters = run_dir / "adapters"
    assert adapters / "peft" / "unet" in written
    assert (adapters / "peft" / "text_encoder" / "adapter_config.json").is_file()
    assert (adapters / "diffusers" / "pytorch_lora_weights.safetensors") in written
    torch.testing.assert_close(loaded, expected, rtol=1e-4, atol=1e-4)  # fp32 sums
    ranks = json.loads((adapters / "ranks.json").read_text())
    flat = {f"{c}.{n}": r for c, layers in ranks.items() for n, r in layers.items()}
    assert flat == state_ranks(final)


def test_an_earlier_round_exports_next_to_the_final_adapters(selora_run, tmp_path):
    run_dir, _, _ = selora_run
    written = export_run(run_dir, round=1)
    elsewhere = export_run(run_dir, round=2, out=tmp_path / "mine")
    ranks = json.loads((run_dir / "adapters_round_1" / "ranks.json").read_text())
    assert all(p.is_relative_to(run_dir / "adapters_round_1") for p in written)
    assert {r for layers in ranks.values() for r in layers.values()} == {1}
    assert all(p.is_relative_to(tmp_path / "mine") for p in elsewhere)
    assert not (run_dir / "adapters").exists()


def test_missing_round_config_or_checkpoint_is_a_clear_error(selora_run, tmp_path):
    run_dir, _, _ = selora_run
    with pytest.raises(FileNotFoundError, match=r"round 7.*\[1, 2\]"):
        export_run(run_dir, round=7)
    with pytest.raises(FileNotFoundError, match="config.json"):
        export_run(tmp_path / "nothing-here")
    empty = RunDirectory(tmp_path / "empty")
    empty.create(tiny_config("selora"))
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        export_run(empty.path)


def test_task_without_artifacts_exports_nothing(tmp_path):
    config = tiny_config("classify")
    task = get_task(config)
    run = RunDirectory(tmp_path / "run")
    run.create(config)
    run.save_checkpoint(1, task.exchanged(task.build_model()), {})
    assert export_run(run.path) == []
    assert task.aggregation_report() == {}
    assert not (run.path / "adapters").exists()


def test_export_command_writes_the_requested_round(selora_run, tmp_path):
    # Prepare
    from typer.testing import CliRunner

    from fedmed.cli import app

    run_dir, _, _ = selora_run
    # Execute
    result = CliRunner().invoke(
        app, ["export", str(run_dir), "--round", "1", "--out", str(tmp_path / "r1")]
    )
    # Assert
    assert result.exit_code == 0, result.output
    ranks = json.loads((tmp_path / "r1" / "ranks.json").read_text())
    assert {r for layers in ranks.values() for r in layers.values()} == {1}
    assert "wrote" in result.output
