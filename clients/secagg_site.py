"""Site handlers of securely aggregated horizontal FL (``secure-aggregation = true``).

Registered on the single ClientApp by :func:`register` as named actions; the
server side is ``strategies.secure_fedavg.SecureAdapterFedAvg``::

    train.secagg_keys / _shares / _ready   key setup (clients.secagg_party)
    train.secagg_fit     aggregate + config -> site id, accepted?, reason,
                         metric names (the update stays on the node)
    train.secagg_mask    MaskRequest + layout -> MaskedInput of
                         [n w, n, n m, n ok] (fedmed.privacy.weighted_sum)
    train.secagg_unmask  UnmaskRequest -> UnmaskResponse

``secagg_fit`` runs the plain training of the ClientApp (faults included)
and keeps its reply on the node instead of sending it. Training and masking
are separate messages so that every site can mask a vector of the same
layout: the metric names are known only once all sites have trained. A site
checks its own update (keys, shapes, finite values, fixed-point range)
because the server cannot once it is masked; a rejected, failed or unsampled
site masks zeros, which count for nothing in the mean, and keeps its place
in the run. The update, its example count and metrics wait in
``context.state`` between the two messages; only the masked vector leaves
the node.
"""

from __future__ import annotations

from collections.abc import Mapping
from logging import ERROR
from typing import Any

import numpy as np
from flwr.app import ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.clientapp.typing import ClientAppCallable
from flwr.supercore import log
from torch import Tensor

from clients.faults import fault_mod
from clients.secagg_party import keep_party, load_party, party_actions
from clients.site import register_actions, site_of
from fedmed.comm.selection import UpdateRejected
from fedmed.config import PlatformConfig, csv_list
from fedmed.privacy.messages import MaskRequest
from fedmed.privacy.weighted_sum import check_site_update, site_vector, update_codec
from fedmed.tasks import get_task
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

FIT_STATE, FIT_METRICS, UPDATE_STATE = "secagg-fit", "secagg-metrics", "secagg-update"


def fit_update(
    msg: Message, context: Context, platform: PlatformConfig, train: ClientAppCallable
) -> RecordDict:
    """``train.secagg_fit``: the plain training, checked here and kept on the node."""
    trained = train(msg, context)  # raises on failure: the guard replies
    update = record_to_state(trained.content[ARRAYS])
    reported = {k: float(v) for k, v in trained.content[METRICS].items()}
    examples = int(reported.pop(NUM_EXAMPLES))
    reported.pop(SITE_ID, None)
    site = site_of(context)
    reason = _rejection(msg, context, update, examples, platform, site)
    round_id = int(msg.content[CONFIG][SERVER_ROUND])
    _keep_fit(context, round_id, None if reason else update, examples, reported)
    text = {REASON: reason, METRIC_NAMES: ",".join(sorted(reported))}
    text = {k: v for k, v in text.items() if v}  # Flower cannot count "" bytes
    return RecordDict(
        {
            METRICS: metric_record({SITE_ID: site, ACCEPTED: int(not reason)}),
            CONFIG: ConfigRecord(text),
        }
    )


def _rejection(
    msg: Message,
    context: Context,
    update: Mapping[str, Tensor],
    examples: int,
    platform: PlatformConfig,
    site: int,
) -> str:
    """Why this site rejects its own update ("" if it can enter the sum)."""
    reference = record_to_state(msg.content[ARRAYS])
    task = get_task(context.run_config)
    try:
        check_site_update(
            task, update, reference, examples, platform.secagg_value_range
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
    examples: int,
    metrics: Mapping[str, Any],
) -> None:
    """Keep an accepted update, its weight and metrics until the mask request."""
    accepted = update is not None
    context.state[FIT_STATE] = MetricRecord(
        {"round": round_id, ACCEPTED: int(accepted), NUM_EXAMPLES: examples}
    )
    context.state[FIT_METRICS] = metric_record(metrics)
    if accepted:
        context.state[UPDATE_STATE] = state_to_record(update, "fp32")


def kept_vector(
    context: Context, round_id: int, names: tuple[str, ...], size: int, limit: float
) -> np.ndarray:
    """The vector to mask: the kept update of ``round_id``, or zeros."""
    fit = context.state.get(FIT_STATE)
    if fit is None or int(fit["round"]) != round_id or not int(fit[ACCEPTED]):
        return site_vector(None, 0, {}, names, size, limit)
    update = record_to_state(context.state[UPDATE_STATE])
    metrics = {k: float(v) for k, v in context.state[FIT_METRICS].items()}
    return site_vector(update, int(fit[NUM_EXAMPLES]), metrics, names, size, limit)


def mask_update(msg: Message, context: Context, platform: PlatformConfig) -> RecordDict:
    """``train.secagg_mask``: mask this round's vector; only that leaves the node."""
    config = msg.content[CONFIG]
    request = from_record(MaskRequest, msg.content[REQUEST])
    party = load_party(context, SITE_PARTY)
    limit = platform.secagg_value_range
    vector = kept_vector(
        context,
        int(config[SERVER_ROUND]),
        csv_list(str(config.get(METRIC_NAMES, ""))),
        int(config[UPDATE_SIZE]),
        limit,
    )
    masked = party.mask(request, vector, update_codec(limit, party.num_parties))
    keep_party(context, SITE_PARTY, party)
    return RecordDict({REPLY: to_record(masked)})


def register(app: ClientApp, train: ClientAppCallable) -> None:
    """Add the secure-aggregation site actions to ``app``.

    ``train`` is the app's plain training, scripted faults included
    (``faults=raise@2:1``); the faults run again before masking, so a crashing
    site drops out of the round.
    """

    def fit(msg: Message, context: Context, platform: PlatformConfig) -> RecordDict:
        return fit_update(msg, context, platform, train)

    register_actions(app, party_actions(SITE_PARTY, site_of))
    register_actions(app, {SITE_PARTY.action("fit"): fit})
    register_actions(app, {SITE_PARTY.action("mask"): mask_update}, mods=[fault_mod])
