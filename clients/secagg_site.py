"""Site handlers of securely aggregated horizontal FL (``secure-aggregation = true``).

Registered on the single ClientApp by :func:`register` as named actions; the
server side is ``strategies.secure_fedavg.SecureAdapterFedAvg``::

    train.secagg_keys    KeyRequest -> KeyAdvertisement (clients.secagg_party)
    train.secagg_fit     aggregate + config + MaskRequest (+ KeyDirectory on
                         the first round) -> MaskedInput of
                         [n w, n, (n m, n) per declared metric], accepted?
    train.secagg_unmask  UnmaskRequest -> UnmaskResponse
    evaluate.secagg_evaluate  aggregate + MaskRequest -> MaskedInput of
                         [n, (n m, n) per declared metric, dense statistics]

``secagg_fit`` runs the plain training of the ClientApp (faults included),
checks the update on the site (the server cannot once it is masked) and
masks it in the same message, so a round is two round trips. Every site
masks the same layout every round: the metric slots are the task's declared
``train_metric_names``, zeros where a site has nothing. The site bounds its
own influence first: an example count that is not a finite integer within
``max-examples-per-site`` is refused, and with ``max-update-norm > 0`` the
update's distance to the aggregate is clipped to that norm. A site that
rejects its own update masks zeros, which count for nothing in the mean,
and says only that it rejected it: the details (counts, norms, tensor
names) stay in its own log. Only the masked vector leaves the node; the
accepted update stays in ``context.state`` as the site's record of the round.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from logging import ERROR, WARNING

from flwr.app import ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.clientapp.typing import ClientAppCallable
from flwr.supercore import log
from torch import Tensor

from clients.secagg_party import keep_party, load_party, open_round, party_actions
from clients.site import register_actions, site_model, site_of
from fedmed.comm.selection import UpdateRejected
from fedmed.config import PlatformConfig
from fedmed.privacy.secure_evaluation import evaluation_vector
from fedmed.privacy.weighted_sum import (
    check_site_update,
    clip_update_norm,
    site_vector,
    update_codec,
)
from fedmed.tasks import get_task
from fedmed.tasks.base import RoundResult, Task
from fedmed.wire import (
    ARRAYS,
    CONFIG,
    METRICS,
    NUM_EXAMPLES,
    SITE_ID,
    record_to_state,
    state_to_record,
)
from fedmed.wire.secagg import (
    ACCEPTED,
    REASON,
    REJECTED,
    REPLY,
    SITE_PARTY,
    to_record,
)

FIT_STATE, UPDATE_STATE = "secagg-fit", "secagg-update"


def fit_and_mask(
    msg: Message, context: Context, platform: PlatformConfig, train: ClientAppCallable
) -> RecordDict:
    """``train.secagg_fit``: train, check and bound the update, mask it."""
    party = load_party(context, SITE_PARTY)
    request = open_round(party, msg.content)  # the directory sizes the codec
    trained = train(msg, context)  # raises on failure: the guard replies
    if trained.has_error():
        raise RuntimeError(f"local training failed: {trained.error.reason}")
    task = get_task(context.run_config)
    reference = record_to_state(msg.content[ARRAYS])
    update = record_to_state(trained.content[ARRAYS])
    reported = {k: float(v) for k, v in trained.content[METRICS].items()}
    claimed = reported.pop(NUM_EXAMPLES, math.nan)
    reported.pop(SITE_ID, None)
    accepted = _accept(task, update, reference, claimed, platform, site_of(context))
    limit = platform.secagg_value_range
    size = sum(t.numel() for t in reference.values())
    names = task.train_metric_names
    _warn_undeclared(reported, names)
    if accepted is None:
        vector = site_vector(None, 0, {}, names, size, limit)
    else:
        vector = site_vector(accepted[0], accepted[1], reported, names, size, limit)
    masked = party.mask(request, vector, update_codec(limit, party.num_parties))
    keep_party(context, SITE_PARTY, party)
    _keep_fit(context, request.round_id, accepted)
    reply = RecordDict(
        {
            REPLY: to_record(masked),
            METRICS: MetricRecord({ACCEPTED: int(bool(accepted))}),
        }
    )
    if accepted is None:
        reply[CONFIG] = ConfigRecord({REASON: REJECTED})
    return reply


def _accept(
    task: Task,
    update: Mapping[str, Tensor],
    reference: Mapping[str, Tensor],
    claimed: float,
    platform: PlatformConfig,
    site: int,
) -> tuple[dict[str, Tensor], int] | None:
    """The bounded update and its weight, or ``None`` if the site rejects it."""
    try:
        bounded, norm = _bounded(task, update, reference, platform.max_update_norm)
        examples = check_site_update(
            task,
            bounded,
            reference,
            claimed,
            platform.secagg_value_range,
            platform.max_examples_per_site,
        )
    except UpdateRejected as err:
        log(ERROR, "site %s rejected its own update: %s", site, err)
        return None
    if platform.max_update_norm and norm > platform.max_update_norm:
        log(
            WARNING,
            "site %s: update norm %.4g clipped to max-update-norm %g",
            site,
            norm,
            platform.max_update_norm,
        )
    return bounded, examples


def _bounded(
    task: Task,
    update: Mapping[str, Tensor],
    reference: Mapping[str, Tensor],
    max_norm: float,
) -> tuple[dict[str, Tensor], float]:
    """Validate first (keys, shapes, finite values), then clip the norm."""
    task.validate_update(update, reference)
    return clip_update_norm(update, reference, max_norm)


def _warn_undeclared(reported: Mapping[str, float], names: tuple[str, ...]) -> None:
    undeclared = sorted(set(reported) - set(names))
    if undeclared:
        log(
            WARNING,
            "training metrics %s are not among the task's train_metric_names; "
            "they stay on the site",
            undeclared,
        )


def _keep_fit(
    context: Context, round_id: int, accepted: tuple[dict[str, Tensor], int] | None
) -> None:
    """Keep the round's outcome (and accepted update) on the node."""
    context.state[FIT_STATE] = MetricRecord(
        {
            "round": round_id,
            ACCEPTED: int(accepted is not None),
            NUM_EXAMPLES: accepted[1] if accepted else 0,
        }
    )
    if accepted is not None:
        context.state[UPDATE_STATE] = state_to_record(accepted[0], "fp32")


def evaluate_and_mask(
    msg: Message, context: Context, platform: PlatformConfig
) -> RecordDict:
    """``evaluate.secagg_evaluate``: evaluate the aggregate, mask metrics and
    dense statistics; only the masked vector leaves the node."""
    party = load_party(context, SITE_PARTY)
    request = open_round(party, msg.content)
    task = get_task(context.run_config)
    model = site_model(task)
    task.load_exchanged(model, record_to_state(msg.content[ARRAYS]))
    result = task.evaluate(model, task.site_data(context.node_config))
    examples = result.num_examples
    if not 0 <= examples <= platform.max_examples_per_site:
        log(
            ERROR,
            "site %s: %s test examples outside the cap",
            site_of(context),
            examples,
        )
        result = RoundResult(0)
    vector = evaluation_vector(
        result.num_examples,
        result.metrics,
        task.evaluate_metric_names,
        task.secure_statistics(result.statistics or None),
        platform.secagg_value_range,
    )
    masked = party.mask(
        request, vector, update_codec(platform.secagg_value_range, party.num_parties)
    )
    keep_party(context, SITE_PARTY, party)
    return RecordDict({REPLY: to_record(masked)})


def register(app: ClientApp, train: ClientAppCallable) -> None:
    """Add the secure-aggregation site actions to ``app``.

    ``train`` is the app's plain training, scripted faults included
    (``faults=raise@2:1``), so a crashing site drops out of the round.
    """

    def fit(msg: Message, context: Context, platform: PlatformConfig) -> RecordDict:
        return fit_and_mask(msg, context, platform, train)

    register_actions(
        app, party_actions(SITE_PARTY, site_of, lambda platform: platform.min_sites)
    )
    register_actions(app, {SITE_PARTY.action("fit"): fit})
    register_actions(
        app, {SITE_PARTY.action("evaluate"): evaluate_and_mask}, category="evaluate"
    )
