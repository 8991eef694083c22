"""strategies/replies.py and the secure channel's use of it, on fake replies."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import ConfigRecord, Message, RecordDict

from fedmed.comm.selection import UpdateRejected
from fedmed.privacy.messages import MaskedInput
from fedmed.runs import RoundTally
from fedmed.wire import CONFIG, METRICS, metric_record, payload_bytes
from fedmed.wire.secagg import ACCEPTED, REASON, REJECTED, REPLY, to_record
from strategies.replies import metric_means, record_silent, screen_replies
from strategies.secagg_channel import Transport
from strategies.secure_fedavg import read_fit
from tests.strategies.conftest import NODE_BASE, error_reply


def _ask(site: int, action: str = "train.secagg_fit") -> Message:
    return Message(RecordDict(), dst_node_id=NODE_BASE + site, message_type=action)


def _fit_reply(ask: Message, accepted: bool, **text: str) -> Message:
    masked = MaskedInput(0, 2, 64, 1.0, 3, np.zeros(4, np.uint64), ())
    content = RecordDict(
        {
            METRICS: metric_record({ACCEPTED: int(accepted)}),
            REPLY: to_record(masked),
        }
    )
    if text:
        content[CONFIG] = ConfigRecord(text)
    return Message(content, reply_to=ask)


def _site(msg: Message) -> str:
    return str(msg.metadata.src_node_id - NODE_BASE)


def test_screen_keeps_what_the_reader_accepts_and_records_the_rest():
    # Prepare: site 0 accepted, 1 rejected its own update (its masked zeros
    # still enter the sum), 2 malformed, 3 crashed
    asks = [_ask(k) for k in range(4)]
    replies = [
        _fit_reply(asks[0], True),
        _fit_reply(asks[1], False, **{REASON: REJECTED}),
        Message(RecordDict(), reply_to=asks[2]),
        error_reply(
            asks[3], "Traceback (most recent call last):\n  ...\nOSError: disk"
        ),
    ]
    tally = RoundTally(list_every_site=True)
    # Execute
    fits = screen_replies(replies, read_fit, tally, where="round 1", site_of=_site)
    # Assert
    assert [(f.site, f.value.accepted) for f in fits] == [("0", True), ("1", False)]
    assert tally.rejected == [
        {"site": "2", "reason": "malformed secagg_fit reply: missing 'metrics'"},
        {"site": "3", "reason": "OSError: disk"},
    ]
    row = tally.take()
    answered = sum(payload_bytes(r.content) for r in replies[:3])
    assert row["bytes_up"] == answered and set(row["sites"]) == {"0", "1", "2"}


def test_silent_sites_are_recorded_once_as_timed_out():
    # Prepare
    tally = RoundTally()
    tally.reject("2", "crashed")
    # Execute
    record_silent(tally, ["0", "1", "2"], ["0"], where="round 3", timeout_s=5.0)
    # Assert
    assert tally.rejected == [
        {"site": "2", "reason": "crashed"},
        {"site": "1", "reason": "no reply (timeout)"},
    ]


class LossyGrid:
    """Answers node 100 with its request, node 101 with an error, 102 never."""

    def send_and_receive(self, messages, timeout=None):
        replies = []
        for msg in messages:
            node = msg.metadata.dst_node_id
            if node == NODE_BASE:
                replies.append(Message(msg.content, reply_to=msg))
            elif node == NODE_BASE + 1:
                replies.append(error_reply(msg, "Traceback\nKeyError: 'party'"))
        return replies


def test_the_secure_channel_drops_failed_and_silent_parties_and_counts_bytes():
    # Prepare
    tally = RoundTally(list_every_site=True)
    transport = Transport(LossyGrid(), timeout=2.0, tally=tally)
    content = RecordDict({CONFIG: ConfigRecord({"x": 1})})
    nodes = {str(k): NODE_BASE + k for k in range(3)}
    # Execute
    replies = transport.exchange("secagg_unmask", {s: content for s in nodes}, nodes)
    # Assert
    assert list(replies) == ["0"]
    assert tally.rejected == [
        {"site": "1", "reason": "KeyError: 'party'"},
        {"site": "2", "reason": "no reply (timeout)"},
    ]
    row = tally.take()
    size = payload_bytes(content)
    assert (row["bytes_down"], row["bytes_up"]) == (3 * size, size)
    assert row["sites"]["2"] == {"bytes_up": 0, "bytes_down": size}


def test_metric_means_weight_each_metric_over_the_rows_that_report_it():
    # Execute
    means = metric_means(
        [{"loss": 1.0, "acc": 0.5, "num-examples": 1}, {"loss": 3.0}], [1, 3]
    )
    # Assert: acc is averaged over the one row that has it
    assert means == {"loss": pytest.approx(2.5), "acc": 0.5, "num-examples": 4.0}


def test_a_site_with_zero_test_cases_keeps_the_others_metrics():
    # Prepare: the first site has no test cases (no AUC, NaN accuracy, weight 0)
    rows = [
        {"accuracy": float("nan"), "loss": float("nan"), "num-examples": 0},
        {"accuracy": 0.5, "auc": 0.8, "loss": 1.0, "num-examples": 10},
        {"accuracy": 0.8, "auc": 0.6, "loss": 2.0, "num-examples": 30},
    ]
    # Execute
    means = metric_means(rows, [0, 10, 30])
    # Assert: every metric stays, weighted over the sites that reported it
    assert means == {
        "accuracy": pytest.approx((0.5 * 10 + 0.8 * 30) / 40),
        "auc": pytest.approx((0.8 * 10 + 0.6 * 30) / 40),
        "loss": pytest.approx((1.0 * 10 + 2.0 * 30) / 40),
        "num-examples": 40.0,
    }


def test_a_reader_refusal_names_the_cause():
    with pytest.raises(UpdateRejected, match="malformed secagg_fit reply"):
        read_fit(RecordDict({METRICS: metric_record({})}))
