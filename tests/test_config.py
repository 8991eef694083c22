import pytest

from fedmed.config import ConfigError, parse_platform
from fedmed.tasks import get_task


def test_unknown_task_key_is_an_error_naming_known_keys():
    with pytest.raises(ConfigError, match="classify.lora-rnak.*known keys"):
        get_task({"task.name": "classify", "classify.lora-rnak": 4})


def test_bad_value_type_is_an_error():
    with pytest.raises(ConfigError, match="classify.lora-rank: expected an integer"):
        get_task({"task.name": "classify", "classify.lora-rank": "four"})


def test_platform_rejects_unknown_prefix_and_top_level_key():
    with pytest.raises(ConfigError, match="unknown prefix 'clasify'"):
        parse_platform({"clasify.lr": 0.1}, ["classify"])
    with pytest.raises(ConfigError, match="unknown run-config key 'num-rounds'"):
        parse_platform({"num-rounds": 3}, ["classify"])


def test_platform_values_are_coerced():
    cfg = parse_platform({"num-server-rounds": "4", "resume": "true"}, ["classify"])
    assert cfg.num_server_rounds == 4 and cfg.resume is True
