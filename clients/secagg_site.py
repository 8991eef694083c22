"""Site handlers of securely aggregated horizontal FL (``secure-aggregation = true``).

Registered on the single ClientApp by :func:`register` as named actions; the
server side is :class:`strategies.secure_fedavg.SecureAdapterFedAvg`::

    train.secagg_keys / _shares / _ready   key setup (clients.secagg_party)
    train.secagg_fit     aggregate + config -> site id, accepted?, reason,
                         metric names (the update stays on the node)
    train.secagg_mask    MaskRequest + layout -> MaskedInput of
                         [n w, n, n m, n ok] (fedmed.privacy.weighted_sum)
    train.secagg_unmask  UnmaskRequest -> UnmaskResponse

Training and masking are separate messages so that every site can mask a
vector of the same layout: the metric names are known only once all sites
have trained. A site checks its own update (keys, shapes, finite values,
fixed-point range) because the server cannot once it is masked; a rejected,
failed or unsampled site masks zeros, which count for nothing in the mean,
and keeps its place in the run. The update, its example count and metrics
wait in ``context.state`` between the two messages; only the masked vector
leaves the node.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import partial
from logging import ERROR

import numpy as np
from flwr.app import ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.supercore import log
from torch import Tensor

from clients.secagg_party import (
    Guard,
    keep_party,
    load_party,
    party_actions,
    register_train_actions,
)
from fedmed.comm.selection import UpdateRejected
from fedmed.config import csv_list, parse_platform
from fedmed.faults import corrupt_update
from fedmed.privacy.messages import MaskRequest
from fedmed.privacy.weighted_sum import check_site_update, site_vector, update_codec
from fedmed.tasks import Task, get_task, list_tasks
from fedmed.tasks.base import RoundResult
from fedmed.wire import (
    ARRAYS,
    CONFIG,
    METRICS,
    NUM_EXAMPLES,
    SERVER_ROUND,
    SITE_ID,
    metric_record,
    record_to_state,
    state_to_record,
)
from fedmed.wire.secagg import (
    ACCEPTED,
    METRIC_NAMES,
    REASON,
    REPLY,
    REQUEST,
    SITE_PARTY,
    UPDATE_SIZE,
    from_record,
    to_record,
)

Faults = Callable[[Message, Context], set[str]]
SiteOf = Callable[[Context], int]

FIT_STATE, FIT_METRICS, UPDATE_STATE = "secagg-fit", "secagg-metrics", "secagg-update"


def value_range(context: Context) -> float:
    """``secagg-value-range`` of the run (the same on every site)."""
    return parse_platform(context.run_config, list_tasks()).secagg_value_range


def fit_update(
    msg: Message, context: Context, faults: Faults, site_of: SiteOf
) -> RecordDict:
    """``train.secagg_fit``: train, check the update here, keep it on the node."""
    kinds = faults(msg, context)
    task = get_task(context.run_config)
    reference = record_to_state(msg.content[ARRAYS])
    model = task.build_model()
    task.load_exchanged(model, reference)
    result = task.fit(model, task.site_data(context.node_config), msg.content[CONFIG])
    update = task.exchanged(model)
    if kinds:
        update = corrupt_update(update, kinds)
    site = site_of(context)
    reason = _rejection(task, update, reference, result, context, site)
    round_id = int(msg.content[CONFIG][SERVER_ROUND])
    _keep_fit(context, round_id, None if reason else update, result)
    text = {REASON: reason, METRIC_NAMES: ",".join(sorted(result.metrics))}
    text = {k: v for k, v in text.items() if v}  # Flower cannot count "" bytes
    return RecordDict(
        {
            METRICS: metric_record({SITE_ID: site, ACCEPTED: int(not reason)}),
            CONFIG: ConfigRecord(text),
        }
    )


def _rejection(
    task: Task,
    update: Mapping[str, Tensor],
    reference: Mapping[str, Tensor],
    result: RoundResult,
    context: Context,
    site: int,
) -> str:
    """Why this site rejects its own update ("" if it can enter the sum)."""
    try:
        check_site_update(
            task, update, reference, result.num_examples, value_range(context)
        )
    except UpdateRejected as err:
        reason = f"site {site} rejected its own update: {err}"
        log(ERROR, "%s", reason)
        return reason
    return ""


def _keep_fit(
    context: Context,
    round_id: int,
    update: Mapping[str, Tensor] | None,
    result: RoundResult,
) -> None:
    """Keep an accepted update, its weight and metrics until the mask request."""
    accepted = update is not None
    context.state[FIT_STATE] = MetricRecord(
        {"round": round_id, ACCEPTED: int(accepted), NUM_EXAMPLES: result.num_examples}
    )
    context.state[FIT_METRICS] = metric_record(result.metrics)
    if accepted:
        context.state[UPDATE_STATE] = state_to_record(update, "fp32")


def kept_vector(
    context: Context, round_id: int, names: tuple[str, ...], size: int
) -> np.ndarray:
    """The vector to mask: the kept update of ``round_id``, or zeros."""
    limit = value_range(context)
    fit = context.state.get(FIT_STATE)
    if fit is None or int(fit["round"]) != round_id or not int(fit[ACCEPTED]):
        return site_vector(None, 0, {}, names, size, limit)
    update = record_to_state(context.state[UPDATE_STATE])
    metrics = {k: float(v) for k, v in context.state[FIT_METRICS].items()}
    return site_vector(update, int(fit[NUM_EXAMPLES]), metrics, names, size, limit)


def mask_update(msg: Message, context: Context, faults: Faults) -> RecordDict:
    """``train.secagg_mask``: mask this round's vector; only that leaves the node."""
    faults(msg, context)
    config = msg.content[CONFIG]
    request = from_record(MaskRequest, msg.content[REQUEST])
    party = load_party(context, SITE_PARTY)
    vector = kept_vector(
        context,
        int(config[SERVER_ROUND]),
        csv_list(str(config.get(METRIC_NAMES, ""))),
        int(config[UPDATE_SIZE]),
    )
    masked = party.mask(
        request, vector, update_codec(value_range(context), party.num_parties)
    )
    keep_party(context, SITE_PARTY, party)
    return RecordDict({REPLY: to_record(masked)})


def register(app: ClientApp, guarded: Guard, faults: Faults, site_of: SiteOf) -> None:
    """Add the secure-aggregation site actions to ``app``.

    ``faults`` runs the scripted faults (``faults=raise@2:1``) before training
    and again before masking, so a crashing site drops out of the round.
    """
    actions = {
        **party_actions(SITE_PARTY, site_of),
        SITE_PARTY.action("fit"): partial(fit_update, faults=faults, site_of=site_of),
        SITE_PARTY.action("mask"): partial(mask_update, faults=faults),
    }
    register_train_actions(app, guarded, actions)
