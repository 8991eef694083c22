"""Evaluation of a secure run: sites mask their metrics and statistics, the server
unmasks only their sums (:mod:`fedmed.privacy.secure_evaluation`).

:class:`strategies.secure_fedavg.SecureAdapterFedAvg` sends
``evaluate.secagg_evaluate`` (the aggregate, the config and the round's
mask request) to every site and reads the replies here: the masked inputs
are added and unmasked like a training round's, if at least ``min-sites``
of them survive; the server then holds the example-weighted mean of each
declared evaluation metric and the pooled statistics, from which the task
computes its pooled metrics (``Task.pooled_metrics`` of one summed site).
It never sees one site's metrics or statistics.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from flwr.app import ArrayRecord, ConfigRecord, Message, RecordDict

from fedmed.privacy import RoundStart, SecAggServer
from fedmed.privacy.messages import MaskedInput
from fedmed.privacy.secure_evaluation import layout, read_evaluation_sum
from fedmed.runs import RoundTally
from fedmed.tasks.base import Task
from fedmed.wire import ARRAYS, CONFIG, NUM_EXAMPLES, payload_bytes
from fedmed.wire.secagg import REPLY, SITE_PARTY, from_record, round_content
from strategies.replies import record_silent, screen_replies
from strategies.secagg_channel import FlowerParties, party_label


def evaluate_messages(
    starts: Mapping[int, RoundStart],
    nodes: Mapping[int, int],
    arrays: ArrayRecord,
    config: ConfigRecord,
    tally: RoundTally,
) -> list[Message]:
    """One ``evaluate.secagg_evaluate`` message per site of the round."""
    kind = f"evaluate.{SITE_PARTY.action('evaluate')}"
    messages = []
    for party, start in starts.items():
        content = round_content(start)
        content[ARRAYS], content[CONFIG] = arrays, config
        tally.sent(str(party), payload_bytes(content))
        messages.append(
            Message(content=content, dst_node_id=nodes[party], message_type=kind)
        )
    return messages


def read_masked(content: RecordDict) -> MaskedInput:
    """A ``secagg_evaluate`` reply: the masked evaluation vector."""
    return from_record(MaskedInput, content[REPLY])


def secure_evaluation(
    task: Task,
    server: SecAggServer,
    channel: FlowerParties,
    replies: Iterable[Message],
    *,
    min_sites: int,
    where: str,
    timeout: float,
) -> dict[str, Any]:
    """Pooled evaluation metrics from the unmasked sum ({} if too few sites)."""
    tally = channel.transport.tally
    party_of = {n: str(p) for p, n in channel.nodes.items()}
    masked = screen_replies(
        replies,
        read_masked,
        tally,
        where=where,
        site_of=lambda msg: party_label(party_of, msg),
    )
    record_silent(
        tally,
        sorted(party_of.values()),
        (m.site for m in masked),
        where=where,
        timeout_s=timeout,
    )
    if len(masked) < min_sites:
        return {}
    requests = server.route_masked_inputs([m.value for m in masked])
    if len(requests) < min_sites:
        return {}  # unmasking would reveal a sum over too few sites
    total = server.unmask(list(channel.unmask(requests).values()))
    sizes = layout(task.secure_statistics(None))
    read = read_evaluation_sum(total.values, task.evaluate_metric_names, sizes)
    aggregated: dict[str, Any] = {
        **read.metrics,
        NUM_EXAMPLES: float(round(read.num_examples)),
    }
    if sizes and read.num_examples >= 0.5:
        pooled = task.pooled_metrics([read.statistics])
        aggregated.update({f"pooled_{k}": v for k, v in pooled.items()})
    aggregated["contributors"] = len(total.contributors)
    return aggregated
