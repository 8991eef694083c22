"""The site ClientApp: one round of local work for whichever task is configured.

Handlers stay thin: Flower types stop here, everything else is the task's.
Any exception is turned into an error reply that carries the site and the
full traceback, so the server logs it the moment it arrives instead of the
run waiting on a silent worker.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable
from logging import ERROR

from flwr.app import Context, Error, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.common.constant import ErrorCode
from flwr.supercore import log

from clients import secagg_site, vfl_clip
from fedmed.config import parse_platform
from fedmed.faults import InjectedFault, corrupt_update, faults_for, parse_faults
from fedmed.tasks import get_task, list_tasks
from fedmed.wire import (
    ARRAYS,
    CONFIG,
    METRICS,
    NUM_EXAMPLES,
    SERVER_ROUND,
    SITE_ID,
    STATISTICS,
    metric_record,
    record_to_state,
    state_to_record,
)

app = ClientApp()


def site_of(context: Context) -> int:
    """Site number: ``site-id`` in a deployment, ``partition-id`` in simulation."""
    node = context.node_config
    return int(node.get("site-id", node.get("partition-id", -1)))


def _guarded(msg: Message, context: Context, work: Callable[[], RecordDict]) -> Message:
    try:
        return Message(work(), reply_to=msg)
    except Exception:  # noqa: BLE001 - every failure must reach the server, with context
        reason = f"site {site_of(context)}: {traceback.format_exc()}"
        log(ERROR, "%s", reason)
        return Message(
            Error(code=ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason=reason),
            reply_to=msg,
        )


def _scripted_faults(msg: Message, context: Context) -> set[str]:
    platform = parse_platform(context.run_config, list_tasks())
    if not platform.faults:
        return set()
    server_round = int(msg.content[CONFIG].get(SERVER_ROUND, 0))
    kinds = faults_for(parse_faults(platform.faults), site_of(context), server_round)
    if "raise" in kinds:
        raise InjectedFault(f"scripted crash in round {server_round}")
    if "sleep" in kinds:
        time.sleep(platform.fault_sleep_s)
    return kinds


@app.train()
def train(msg: Message, context: Context) -> Message:
    """Load the aggregate, train locally, send back only the exchanged tensors."""

    def work() -> RecordDict:
        kinds = _scripted_faults(msg, context)
        task = get_task(context.run_config)
        codec = str(context.run_config.get("comm-dtype", "fp32"))
        model = task.build_model()
        task.load_exchanged(model, record_to_state(msg.content[ARRAYS]))
        result = task.fit(
            model, task.site_data(context.node_config), msg.content[CONFIG]
        )
        update = (
            corrupt_update(task.exchanged(model), kinds)
            if kinds
            else task.exchanged(model)
        )
        metrics = {
            **result.metrics,
            NUM_EXAMPLES: result.num_examples,
            SITE_ID: site_of(context),
        }
        return RecordDict(
            {ARRAYS: state_to_record(update, codec), METRICS: metric_record(metrics)}
        )

    return _guarded(msg, context, work)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    """Evaluate the aggregate on the site's test split; send metrics + statistics."""

    def work() -> RecordDict:
        task = get_task(context.run_config)
        model = task.build_model()
        task.load_exchanged(model, record_to_state(msg.content[ARRAYS]))
        result = task.evaluate(model, task.site_data(context.node_config))
        metrics = {
            **result.metrics,
            NUM_EXAMPLES: result.num_examples,
            SITE_ID: site_of(context),
        }
        content = RecordDict({METRICS: metric_record(metrics)})
        if result.statistics:
            content[STATISTICS] = metric_record(result.statistics)
        return content

    return _guarded(msg, context, work)


vfl_clip.register(app, _guarded, _scripted_faults)  # VFL-CLIP roles (named actions)
secagg_site.register(app, _guarded, _scripted_faults, site_of)  # secure aggregation
