"""The site ClientApp: one round of local work for whichever task is configured.

Handlers stay thin: Flower types stop here, everything else is the task's.
Errors become error replies in one place (:func:`clients.site.guard_mod`, a
mod on the whole app); scripted faults are a mod on the handlers they target
(:func:`clients.faults.fault_mod`). Secure aggregation's fit reuses the plain
training body (:func:`train`, faults included) and keeps its update on the
node; VFL-CLIP's roles are named actions on the same app.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from flwr.app import Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from torch.nn import Module

from clients import secagg_site, vfl_clip
from clients.faults import fault_mod
from clients.site import guard_mod, handler, site_model, site_of, with_mods
from fedmed.config import PlatformConfig
from fedmed.tasks import Task, get_task
from fedmed.tasks.base import SiteData
from fedmed.wire import (
    ARRAYS,
    CONFIG,
    EVALUATE_FIRST,
    METRICS,
    NUM_EXAMPLES,
    PRIOR,
    SITE_ID,
    STATISTICS,
    metric_record,
    record_to_state,
    state_to_record,
)

app = ClientApp(mods=[guard_mod])


def train_work(msg: Message, context: Context, platform: PlatformConfig) -> RecordDict:
    """Load the aggregate, train locally, reply with only the exchanged tensors.

    With ``evaluate-first`` in the config the received aggregate is evaluated
    before training and that evaluation rides in the reply (``evaluated-*``
    records), so a round is one message instead of a train and an evaluate.
    """
    task = get_task(context.run_config)
    model = site_model(task)
    task.load_exchanged(model, record_to_state(msg.content[ARRAYS]))
    data = task.site_data(context.node_config)
    config = msg.content[CONFIG]
    prior = RecordDict()
    if config.get(EVALUATE_FIRST, False):
        with torch.random.fork_rng():  # training draws what it would have drawn
            prior = evaluation_content(task, model, data, context)
    result = task.fit(model, data, config)
    content = RecordDict(
        {
            ARRAYS: state_to_record(task.exchanged(model), platform.comm_dtype),
            METRICS: site_metrics(result.metrics, result.num_examples, context),
        }
    )
    for key, record in prior.items():
        content[PRIOR + key] = record
    return content


def evaluate_work(
    msg: Message, context: Context, platform: PlatformConfig
) -> RecordDict:
    """Evaluate the aggregate on the site's test split; send metrics + statistics."""
    task = get_task(context.run_config)
    model = site_model(task)
    task.load_exchanged(model, record_to_state(msg.content[ARRAYS]))
    return evaluation_content(task, model, task.site_data(context.node_config), context)


def evaluation_content(
    task: Task, model: Module, data: SiteData, context: Context
) -> RecordDict:
    """An evaluate reply's content: metrics (+ statistics) of ``model`` on ``data``."""
    result = task.evaluate(model, data)
    content = RecordDict(
        {METRICS: site_metrics(result.metrics, result.num_examples, context)}
    )
    if result.statistics:
        content[STATISTICS] = metric_record(result.statistics)
    return content


def site_metrics(
    metrics: Mapping[str, float], num_examples: int, context: Context
) -> MetricRecord:
    """A reply's metrics with its example count and the site's claimed name."""
    return metric_record(
        {**metrics, NUM_EXAMPLES: num_examples, SITE_ID: site_of(context)}
    )


#: Local training as the app runs it: the scripted faults around the work.
train = with_mods(handler(train_work), [fault_mod])
app.train()(train)
app.evaluate()(handler(evaluate_work))
vfl_clip.register(app)  # VFL-CLIP roles (named actions)
secagg_site.register(app, train)  # secure aggregation, reusing the training body
