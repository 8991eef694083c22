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


@pytest.mark.parametrize(
    "other, complaint",
    [
        ({"secure-aggregation": True}, "cannot be combined"),
        ({"fraction-train": 0.5}, "needs fraction-train=1"),
    ],
)
def test_one_message_rounds_are_refused_where_they_cannot_serve(other, complaint):
    with pytest.raises(ConfigError, match=complaint):
        parse_platform({"evaluate-with-train": True, **other})
    assert parse_platform({"evaluate-with-train": True}).evaluate_with_train


def test_deployments_send_one_message_per_round_unless_told_otherwise():
    from fedmed.deploy.local_run import deployment_defaults

    assert deployment_defaults({})["evaluate-with-train"] is True
    assert (
        deployment_defaults({"secure-aggregation": True})["evaluate-with-train"]
        is False
    )
    assert deployment_defaults({"fraction-train": 0.5})["evaluate-with-train"] is False
    assert (
        deployment_defaults({"evaluate-with-train": False})["evaluate-with-train"]
        is False
    )
