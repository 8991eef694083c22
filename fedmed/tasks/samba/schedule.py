"""What SAMBA trains in each server round: the paper's budgets are totals over a run.

SAMBA Sec. 2.3 trains the mask decoder for 15 epochs (binary) or 50
(SAMBA-mc); Sec. 2.4 then trains the voting network on the fine-tuned SAM's
masks; Sec. 2.2 trains the YOLOv8 localizer for 150 epochs. A federated run of
R server rounds spends each budget once, not once per round:

* **Decoder**: ``samba.epochs`` (0 = the paper's 15 / 50) are split over the
  decoder rounds as evenly as possible and sum to the budget exactly. With
  the voting network on and R >= 2 the decoder rounds are 1 .. R-1; otherwise
  all R rounds. A round whose share is 0 (more rounds than epochs) sends the
  decoder back unchanged.
* **Voting network**: trains once, in round R, for at most
  ``samba.voting-epochs`` with early stopping. With R >= 2 the decoder is
  final by then (every site received the same aggregate and does not change
  it), so the voting net learns from the masks of the decoder it is evaluated
  with. With R = 1 the decoder trains first and the voting net after it, in
  the same round, as in the paper's pipeline.
* **Localizer**: ``samba.yolo-epochs`` are split over all R rounds.

Rounds beyond R (``server-round > num-server-rounds``) have nothing left to
spend and train nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

from fedmed.tasks.samba.config import SambaConfig


@dataclass(frozen=True)
class RoundPlan:
    """The training one site does in one server round."""

    decoder_epochs: int
    train_voting: bool
    localizer_epochs: int


def epoch_share(total: int, part: int, parts: int) -> int:
    """Epochs of round ``part`` (1-based) when ``total`` is spread over ``parts``.

    Round k gets ``floor(k * total / parts) - floor((k - 1) * total / parts)``:
    shares differ by at most one and their sum over rounds 1 .. parts is
    ``total``; rounds outside 1 .. parts get 0.
    """
    if parts < 1 or not 1 <= part <= parts:
        return 0
    return total * part // parts - total * (part - 1) // parts


def decoder_rounds(cfg: SambaConfig, num_rounds: int) -> int:
    """Rounds that train the decoder: all, or all but the last (voting's round)."""
    return num_rounds - 1 if cfg.voting and num_rounds > 1 else num_rounds


def round_plan(cfg: SambaConfig, server_round: int, num_rounds: int) -> RoundPlan:
    """What round ``server_round`` of ``num_rounds`` trains (module docstring)."""
    localizer = cfg.yolo_epochs if cfg.localizer != "off" else 0
    return RoundPlan(
        decoder_epochs=epoch_share(
            cfg.decoder_epochs, server_round, decoder_rounds(cfg, num_rounds)
        ),
        train_voting=cfg.voting and server_round == num_rounds,
        localizer_epochs=epoch_share(localizer, server_round, num_rounds),
    )
