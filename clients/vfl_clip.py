"""VFL-CLIP node handlers: image providers and the knowledge provider.

Registered on the single ClientApp by :func:`register` as named actions
(``message_type = "train.<action>"``; roles from
:func:`fedmed.tasks.vfl_clip.roles.resolve_role`)::

    query.vfl_role     any node            -> its role (and site index)
    train.vfl_keys     KeyRequest          -> KeyAdvertisement (public key)
    train.vfl_mask     TextFeatures + MaskRequest (+ KeyDirectory on the
                       first round) -> MaskedInput
    train.vfl_unmask   UnmaskRequest       -> UnmaskResponse
    train.vfl_text     knowledge provider (+ context to resume from) -> T
    train.vfl_apply    AggregatedGradient  -> new T, context, pooled loss
                       (with several knowledge providers: pooled loss only)
    train.vfl_text_keys / _unmask   knowledge providers' key setup and unmask
    train.vfl_text_mask MaskRequest (+ KeyDirectory) -> masked ``[T_k, s_k]``

State that must survive between messages lives in ``context.state`` (each
message may run in a fresh process): an image provider's secure-aggregation
party (private keys included, they never leave the node; the setup and
unmask handlers are :mod:`clients.secagg_party`'s) and the knowledge
provider's context vectors with their Adam moments. With several knowledge
providers each one's context and Adam state stay on its node only: its
``T_k`` leaves it masked, and ``vfl_apply`` replies with the pooled loss, not
the new ``T_k`` or context, which would let the server compute ``T_k``.
"""

from __future__ import annotations

from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.clientapp import ClientApp

from clients.faults import fault_mod
from clients.secagg_party import keep_party, load_party, open_round, party_actions
from clients.site import Work, register_actions
from fedmed.config import PlatformConfig
from fedmed.privacy.errors import ValueOutOfRange
from fedmed.tasks import get_task
from fedmed.tasks.vfl_clip.knowledge import text_codec
from fedmed.tasks.vfl_clip.messages import AggregatedGradient, TextFeatures
from fedmed.tasks.vfl_clip.protocol import ProviderJob, provider_vector, secagg_codec
from fedmed.tasks.vfl_clip.roles import KnowledgeProvider, resolve_role
from fedmed.tasks.vfl_clip.task import VflClipTask
from fedmed.wire import (
    ARRAYS,
    CONFIG,
    METRICS,
    SERVER_ROUND,
    arrays_to_record,
    metric_record,
    record_to_arrays,
    record_to_state,
    state_to_record,
)
from fedmed.wire.secagg import REPLY, REQUEST, from_record, to_record
from fedmed.wire.vfl import (
    APPLY_ACTION,
    BATCH_SEED,
    KNOWLEDGE_ID,
    PHASE,
    ROLE,
    ROLE_ACTION,
    SITE,
    TEXT,
    TEXT_ACTION,
    VFL_PARTY,
    VFL_TEXT_PARTY,
)

KNOWLEDGE_STATE = "vfl-knowledge"


def _task(context: Context) -> VflClipTask:
    task = get_task(context.run_config)
    if not isinstance(task, VflClipTask):
        raise TypeError(f"VFL messages need task vfl-clip, found {task.name!r}")
    return task


def _knowledge(context: Context, task: VflClipTask) -> KnowledgeProvider:
    knowledge = task.knowledge_provider(knowledge_party(context))
    if KNOWLEDGE_STATE in context.state:
        knowledge.load_state_arrays(record_to_arrays(context.state[KNOWLEDGE_STATE]))
    return knowledge


def _publish(
    context: Context, task: VflClipTask, knowledge: KnowledgeProvider, round_id: int
) -> RecordDict:
    """Keep the provider's state on the node; reply with ``T`` and the context."""
    context.state[KNOWLEDGE_STATE] = arrays_to_record(knowledge.state_arrays())
    return RecordDict(
        {
            TEXT: to_record(knowledge.text_features(round_id)),
            ARRAYS: state_to_record(task.exchanged(knowledge.model), "fp32"),
        }
    )


def role_reply(msg: Message, context: Context, platform: PlatformConfig) -> RecordDict:
    """``query.vfl_role``: this node's role and, for image providers, its site."""
    role = resolve_role(context.node_config, _task(context).cfg)
    site = -1 if role.site is None else role.site
    index = -1 if role.knowledge is None else role.knowledge
    reply = {ROLE: role.role, SITE: site, KNOWLEDGE_ID: index}
    return RecordDict({CONFIG: ConfigRecord(reply)})


def provider_site(context: Context) -> int:
    """This node's party id: its image-provider site (none for the knowledge one)."""
    role = resolve_role(context.node_config, _task(context).cfg)
    if role.site is None:
        raise RuntimeError("the knowledge provider takes no part in secure aggregation")
    return role.site


def knowledge_party(context: Context) -> int:
    """This node's knowledge-provider index (its party id in the text sum)."""
    role = resolve_role(context.node_config, _task(context).cfg)
    if role.knowledge is None:
        raise RuntimeError(
            f"this node is image provider {role.site}, not a knowledge provider"
        )
    return role.knowledge


def mask_text(msg: Message, context: Context, platform: PlatformConfig) -> RecordDict:
    """``train.vfl_text_mask``: this knowledge provider's ``[T_k, s_k]``, masked."""
    task, party = _task(context), load_party(context, VFL_TEXT_PARTY)
    knowledge = _knowledge(context, task)
    request = open_round(party, msg.content)  # directory first: it sizes the codec
    codec = text_codec(task.cfg, party.num_parties)
    masked = party.mask(request, knowledge.text_vector(), codec)
    keep_party(context, VFL_TEXT_PARTY, party)
    context.state[KNOWLEDGE_STATE] = arrays_to_record(knowledge.state_arrays())
    return RecordDict({REPLY: to_record(masked)})


def mask_vector(msg: Message, context: Context, platform: PlatformConfig) -> RecordDict:
    """``train.vfl_mask``: ``[G_i, loss_i, N_i]`` or statistics, masked."""
    task, party = _task(context), load_party(context, VFL_PARTY)
    config = msg.content[CONFIG]
    job = ProviderJob(
        "train" if config[PHASE] == "train" else "evaluate",
        from_record(TextFeatures, msg.content[TEXT]),
        int(config[BATCH_SEED]),
    )
    vector = provider_vector(task.image_provider(context.node_config), task.cfg, job)
    request = open_round(party, msg.content)  # directory first: it sizes the codec
    try:
        masked = party.mask(request, vector, secagg_codec(task.cfg, party.num_parties))
    except ValueOutOfRange as err:
        raise ValueOutOfRange(
            err.party,
            err.index,
            err.value,
            err.value_range,
            hint=f"in the {job.phase} vector of {len(vector)} values (a train "
            "vector ends with the loss sum and the sample count); raise "
            "vfl-clip.secagg-range (costs precision) or set vfl-clip.secagg-bits=64",
        ) from err
    keep_party(context, VFL_PARTY, party)
    return RecordDict({REPLY: to_record(masked)})


def publish_text(
    msg: Message, context: Context, platform: PlatformConfig
) -> RecordDict:
    """``train.vfl_text``: ``T`` of the current (or a resumed) context; refused
    with several knowledge providers, whose ``T_k`` leaves the node masked only."""
    task = _task(context)
    if task.cfg.knowledge_providers > 1:
        raise RuntimeError(
            f"knowledge provider {knowledge_party(context)} of "
            f"{task.cfg.knowledge_providers} sends its text features masked only "
            f"(train.{VFL_TEXT_PARTY.action('mask')}), never in the clear"
        )
    knowledge = _knowledge(context, task)
    if ARRAYS in msg.content:  # resuming: context from the last checkpoint
        task.load_exchanged(knowledge.model, record_to_state(msg.content[ARRAYS]))
    return _publish(context, task, knowledge, int(msg.content[CONFIG][SERVER_ROUND]))


def apply_gradient(
    msg: Message, context: Context, platform: PlatformConfig
) -> RecordDict:
    """``train.vfl_apply``: Adam step on the secure sum; reply with the new ``T``
    (one knowledge provider) or the pooled loss only (several: ``T_k`` stays)."""
    task = _task(context)
    knowledge = _knowledge(context, task)
    aggregate = from_record(AggregatedGradient, msg.content[REQUEST])
    step = knowledge.apply(aggregate)
    if task.cfg.knowledge_providers > 1:
        context.state[KNOWLEDGE_STATE] = arrays_to_record(knowledge.state_arrays())
        return RecordDict({METRICS: metric_record(step)})
    reply = _publish(context, task, knowledge, aggregate.round)
    reply[METRICS] = metric_record(step)
    return reply


TRAIN_ACTIONS: dict[str, Work] = {
    **party_actions(VFL_PARTY, provider_site),  # vfl_keys, vfl_unmask
    **party_actions(VFL_TEXT_PARTY, knowledge_party),  # vfl_text_keys, _unmask
    VFL_TEXT_PARTY.action("mask"): mask_text,
    TEXT_ACTION: publish_text,
    APPLY_ACTION: apply_gradient,
}


def register(app: ClientApp) -> None:
    """Add the VFL-CLIP actions to ``app``.

    The scripted faults (``faults=raise@2:0``) run before masking, so tests can
    make an image provider fail before it sends its input.
    """
    register_actions(app, {ROLE_ACTION: role_reply}, category="query")
    register_actions(app, TRAIN_ACTIONS)
    register_actions(app, {VFL_PARTY.action("mask"): mask_vector}, mods=[fault_mod])
