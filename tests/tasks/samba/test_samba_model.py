"""What SAMBA builds and exchanges: decoder + voting net only, deterministic."""

from __future__ import annotations

import pytest
import torch

from fedmed.comm.selection import UpdateRejected
from fedmed.config import ConfigError
from fedmed.tasks.registry import get_task
from fedmed.tasks.samba.config import SambaConfig
from fedmed.tasks.samba.model import build_tiny_sam
from fedmed.tasks.samba.task import SambaTask
from fedmed.tasks.samba.train import decode
from fedmed.tasks.samba.voting import build_voting_net

TINY_RUN = {
    "task.name": "samba",
    "samba.sam-model": "tiny",
    "samba.views": "z",
    "seed": 7,
}


def test_no_encoder_tensor_is_exchanged():
    # Prepare
    task = get_task(TINY_RUN)
    model = task.build_model()
    # Execute
    sent = task.exchanged(model)
    # Assert
    assert isinstance(task, SambaTask)
    assert not any(
        k.startswith(("sam.image_encoder.", "sam.prompt_encoder.")) for k in sent
    )
    trained = {n for n, p in model.named_parameters() if p.requires_grad}
    assert set(sent) == trained
    assert {k.split(".")[0] for k in sent} == {"sam", "voting"}
    assert all(k.startswith(("sam.mask_decoder.", "voting.")) for k in sent)
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert any(n.startswith("sam.image_encoder.") for n in frozen)
    assert any(n.startswith("sam.prompt_encoder.") for n in frozen)
    assert not frozen & set(sent)


def test_without_voting_only_the_decoder_travels():
    # Prepare
    task = get_task({**TINY_RUN, "samba.voting": False})
    # Execute
    sent = task.exchanged(task.build_model())
    # Assert
    assert sent and all(k.startswith("sam.mask_decoder.") for k in sent)


def test_build_is_deterministic_and_exchange_round_trips():
    # Prepare
    task = get_task(TINY_RUN)
    first, second = task.build_model(), task.build_model()
    update = {k: v + 0.5 for k, v in task.exchanged(first).items()}
    # Execute
    task.load_exchanged(second, update)
    # Assert
    for name, value in task.exchanged(task.build_model()).items():
        torch.testing.assert_close(value, task.exchanged(first)[name])
    for name, value in task.exchanged(second).items():
        torch.testing.assert_close(value, update[name])


def test_malformed_aggregate_is_rejected_before_loading():
    # Prepare
    task = get_task(TINY_RUN)
    model = task.build_model()
    state = task.exchanged(model)
    name = next(iter(state))
    bad = {**state, name: torch.full_like(state[name], float("nan"))}
    # Execute / Assert
    with pytest.raises(UpdateRejected, match="NaN"):
        task.load_exchanged(model, bad)
    torch.testing.assert_close(task.exchanged(model)[name], state[name])


@pytest.mark.parametrize(
    ("views", "expected_in"), [("z", 7), ("x,y,z", 13)], ids=["authors", "three-views"]
)
def test_voting_net_has_100k_to_250k_parameters(views, expected_in):
    # Prepare
    cfg = SambaConfig(views="x,y,z", voting_views=views)
    # Execute
    net = build_voting_net(cfg)
    count = sum(p.numel() for p in net.parameters())
    # Assert
    assert cfg.voting_in_channels == expected_in
    assert 100_000 <= count <= 250_000
    if views == "z":
        assert count == 116_343  # the authors' Voting_3D network


def test_batched_decoder_equals_stock_per_image_calls():
    # Prepare
    torch.manual_seed(0)
    sam = build_tiny_sam(64, 32)
    embeddings = torch.randn(4, 32, 16, 16)
    boxes = torch.tensor(
        [[2.0, 3, 30, 40], [10, 10, 50, 20], [0, 0, 63, 63], [5, 30, 9, 33]]
    )
    with torch.no_grad():
        sparse, dense = sam.prompt_encoder(points=None, boxes=boxes, masks=None)
        pe = sam.prompt_encoder.get_dense_pe()
        for multimask in (False, True):
            # Execute
            batched = decode(sam, embeddings, boxes, multimask)
            stock = torch.cat(
                [
                    sam.mask_decoder(
                        image_embeddings=embeddings[i : i + 1],
                        image_pe=pe,
                        sparse_prompt_embeddings=sparse[i : i + 1],
                        dense_prompt_embeddings=dense[i : i + 1],
                        multimask_output=multimask,
                    )[0]
                    for i in range(4)
                ]
            )
            # Assert
            assert batched.shape == (4, 3 if multimask else 1, 64, 64)
            torch.testing.assert_close(batched, stock, rtol=1e-5, atol=1e-5)


def test_bad_config_keys_and_values_are_refused():
    # Execute / Assert
    with pytest.raises(ConfigError, match="samba.lr-rate"):
        get_task({**TINY_RUN, "samba.lr-rate": 0.1})
    with pytest.raises(ConfigError, match="voting-modalities"):
        SambaConfig(modalities="t1,flair", voting_modalities="t1,t2", voting=True)
    with pytest.raises(ConfigError, match="views"):
        SambaConfig(views="axial")
    with pytest.raises(ConfigError, match="variant"):
        get_task({**TINY_RUN, "samba.variant": "multi"})


def test_missing_sam_checkpoint_says_where_to_put_it(tmp_path):
    # Prepare
    task = get_task({**TINY_RUN, "samba.sam-checkpoint": str(tmp_path / "sam.pth")})
    # Execute / Assert
    with pytest.raises(FileNotFoundError, match=r"sam\.pth.*samba\.sam-checkpoint"):
        task.build_model()


def test_user_sam_checkpoint_is_loaded(tmp_path):
    # Prepare
    source = get_task({**TINY_RUN, "seed": 3}).build_model().sam
    path = tmp_path / "sam_tiny.pth"
    torch.save(source.state_dict(), path)
    task = get_task({**TINY_RUN, "samba.sam-checkpoint": str(path)})
    # Execute
    loaded = task.build_model().sam
    # Assert
    for name, value in source.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[name], value)


def test_localizer_travels_only_when_federated():
    # Prepare
    local = get_task({**TINY_RUN, "samba.localizer": "local"})
    federated = get_task({**TINY_RUN, "samba.localizer": "federated"})
    # Execute
    model = federated.build_model()
    sent_local = local.exchanged(local.build_model())
    sent_federated = federated.exchanged(model)
    # Assert
    assert not any(k.startswith("localizer.") for k in sent_local)
    yolo = {k for k in sent_federated if k.startswith("localizer.")}
    assert any(k.endswith("running_mean") for k in yolo)
    assert not any("num_batches_tracked" in k or ".dfl." in k for k in yolo)
    federated.load_exchanged(model, sent_federated)


def test_defaults_are_the_papers_settings():
    # Execute
    binary, multiclass = SambaConfig(), SambaConfig(variant="mc")
    # Assert: SAMBA Sec. 2.3 and the authors' code (see the config docstring)
    assert (binary.decoder_epochs, multiclass.decoder_epochs) == (15, 50)
    assert (binary.lr, binary.weight_decay, binary.box_jitter) == (1e-5, 0.0, 20)
    assert binary.view_list == ("x", "y", "z") and binary.sam_model == "vit_b"
    assert binary.voting_in_channels == 7 and binary.voting_lr == 1e-3
    assert (binary.yolo_epochs, binary.yolo_imgsz, binary.yolo_empty_keep) == (
        150,
        256,
        0.2,
    )
    assert SambaConfig(epochs=3, variant="mc").decoder_epochs == 3
