import pytest

from fedmed.tasks import get_task
from tests.tasks.test_task_contract import tiny_run_config


@pytest.mark.parametrize(
    ("mode", "expected_prefixes"),
    [
        ("linear", {"head."}),
        ("lora", {"base_model.model.head.", "base_model.model.blocks."}),
    ],
)
def test_mode_changes_only_what_is_exchanged(mode, expected_prefixes):
    task = get_task({**tiny_run_config("classify"), "classify.mode": mode})
    model = task.build_model()
    sent = task.exchanged(model)
    total = sum(p.numel() for p in model.parameters())
    assert all(any(k.startswith(p) for p in expected_prefixes) for k in sent)
    if mode == "lora":
        assert all("lora_" in k or ".head." in k for k in sent)
    assert sum(v.numel() for v in sent.values()) < 0.1 * total


def test_full_mode_exchanges_every_parameter():
    task = get_task({**tiny_run_config("classify"), "classify.mode": "full"})
    model = task.build_model()
    assert len(task.exchanged(model)) == len(list(model.parameters()))
