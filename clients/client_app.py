"""The site ClientApp: one round of local work for whichever task is configured.

Handlers stay thin: Flower types stop here, everything else is the task's.
Errors become error replies in one place (:func:`clients.site.guard_mod`, a
mod on the whole app); scripted faults are a mod on the handlers they target
(:func:`clients.faults.fault_mod`). Secure aggregation's fit reuses the plain
training body (:func:`train`, faults included) and keeps its update on the
node; VFL-CLIP's roles are named actions on the same app.
"""

from __future__ import annotations

from flwr.app import Context, Message, RecordDict
from flwr.clientapp import ClientApp

from clients import secagg_site, vfl_clip
from clients.faults import fault_mod
from clients.site import guard_mod, handler, site_model, site_of, with_mods
from fedmed.config import PlatformConfig
from fedmed.tasks import get_task
from fedmed.wire import (
    ARRAYS,
    CONFIG,
    METRICS,
    NUM_EXAMPLES,
    SITE_ID,
    STATISTICS,
    metric_record,
    record_to_state,
    state_to_record,
)

app = ClientApp(mods=[guard_mod])


def train_work(msg: Message, context: Context, platform: PlatformConfig) -> RecordDict:
    """Load the aggregate, train locally, reply with only the exchanged tensors."""
    task = get_task(context.run_config)
    model = site_model(task)
    task.load_exchanged(model, record_to_state(msg.content[ARRAYS]))
    result = task.fit(model, task.site_data(context.node_config), msg.content[CONFIG])
    metrics = {
        **result.metrics,
        NUM_EXAMPLES: result.num_examples,
        SITE_ID: site_of(context),
    }
    return RecordDict(
        {
            ARRAYS: state_to_record(task.exchanged(model), platform.comm_dtype),
            METRICS: metric_record(metrics),
        }
    )


def evaluate_work(
    msg: Message, context: Context, platform: PlatformConfig
) -> RecordDict:
    """Evaluate the aggregate on the site's test split; send metrics + statistics."""
    task = get_task(context.run_config)
    model = site_model(task)
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


#: Local training as the app runs it: the scripted faults around the work.
train = with_mods(handler(train_work), [fault_mod])
app.train()(train)
app.evaluate()(handler(evaluate_work))
vfl_clip.register(app)  # VFL-CLIP roles (named actions)
secagg_site.register(app, train)  # secure aggregation, reusing the training body
