"""SeLoRA run-config section: paper defaults, loud errors."""

import pytest

from fedmed.config import ConfigError, parse_section
from fedmed.tasks.selora.config import SeLoRAConfig


def test_defaults_are_the_papers():
    cfg = parse_section(SeLoRAConfig, {}, "selora")
    assert (cfg.init_rank, cfg.expand_every, cfg.expand_threshold) == (1, 40, 1.1)
    assert (cfg.lr, cfg.batch_size, cfg.resolution, cfg.selora_scaling) == (
        1e-4,
        8,
        224,
        8.0,
    )
    assert cfg.split_fractions == (0.8, 0.16, 0.04) and cfg.seeds == (0, 1, 2)
    assert cfg.text_targets_list == (
        "q_proj",
        "k_proj",
        "v_proj",
        "out_proj",
        "fc1",
        "fc2",
    )


@pytest.mark.parametrize(
    "key, value",
    [
        ("selora.expand-thresold", 1.3),
        ("selora.method", "sora"),
        ("selora.split", "0.5,0.4"),
        ("selora.init-rank", 0),
        ("selora.fisher", "exact"),
        ("selora.energy", 1.5),
        ("selora.eval-seeds", "a,b"),
        ("selora.adalora-init-rank", 2),
    ],
)
def test_bad_values_raise_config_errors(key, value):
    with pytest.raises(ConfigError):
        parse_section(SeLoRAConfig, {key: value}, "selora")


def test_montgomery_split_has_no_validation():
    cfg = parse_section(SeLoRAConfig, {"selora.split": "0.8,0.2"}, "selora")
    assert cfg.split_fractions == (0.8, 0.0, 0.2)
