"""VFL-CLIP node handlers: image providers and the knowledge provider.

Registered on the single ClientApp by :func:`register` as named actions
(``message_type = "train.<action>"``; roles from
:func:`fedmed.tasks.vfl_clip.roles.resolve_role`)::

    query.vfl_role     any node            -> its role (and site index)
    train.vfl_keys     image provider      -> KeyAdvertisement (public keys)
    train.vfl_shares   KeyDirectory        -> SetupShares (encrypted)
    train.vfl_ready    SetupSharesDelivery -> acknowledgement
    train.vfl_mask     TextFeatures + MaskRequest -> MaskedInput
    train.vfl_unmask   UnmaskRequest       -> UnmaskResponse
    train.vfl_text     knowledge provider (+ context to resume from) -> T
    train.vfl_apply    AggregatedGradient  -> new T, context, pooled loss

State that must survive between messages lives in ``context.state`` (each
message may run in a fresh process): an image provider's secure-aggregation
party (private keys included, they never leave the node) and the knowledge
provider's context vectors with their Adam moments. The wire helpers
(:func:`to_record`, :func:`from_record`) are shared with
``strategies.vfl_clip``.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any, TypeVar

from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, RecordDict
from flwr.clientapp import ClientApp

from fedmed.privacy import SecAggParty
from fedmed.privacy.messages import (
    KeyDirectory,
    MaskRequest,
    SetupSharesDelivery,
    UnmaskRequest,
    WireMessage,
)
from fedmed.records import (
    ARRAYS,
    CONFIG,
    METRICS,
    SERVER_ROUND,
    metric_record,
    record_to_state,
    state_to_record,
)
from fedmed.tasks import get_task
from fedmed.tasks.vfl_clip.messages import AggregatedGradient, TextFeatures
from fedmed.tasks.vfl_clip.protocol import ProviderJob, provider_vector, secagg_codec
from fedmed.tasks.vfl_clip.roles import KnowledgeProvider, resolve_role
from fedmed.tasks.vfl_clip.task import VflClipTask

M = TypeVar("M", bound=WireMessage)
Guard = Callable[[Message, Context, Callable[[], RecordDict]], Message]
Faults = Callable[[Message, Context], set[str]]
Work = Callable[[Message, Context], RecordDict]

ROLE_ACTION = "vfl_role"
PARTY_STATE = "vfl-secagg-party"
KNOWLEDGE_STATE = "vfl-knowledge"
REQUEST, REPLY, TEXT = "request", "reply", "text"


def to_record(message: WireMessage) -> ArrayRecord:
    """A protocol message as an ArrayRecord of flat numpy arrays (no pickle)."""
    return ArrayRecord({k: Array(v) for k, v in message.to_arrays().items()})


def from_record(kind: type[M], record: ArrayRecord) -> M:
    """The protocol message ``kind`` back from its ArrayRecord (validated)."""
    return kind.from_arrays({k: record[k].numpy() for k in record})


def _task(context: Context) -> VflClipTask:
    task = get_task(context.run_config)
    if not isinstance(task, VflClipTask):
        raise TypeError(f"VFL messages need task vfl-clip, found {task.name!r}")
    return task


def _party(context: Context) -> SecAggParty:
    if PARTY_STATE not in context.state:
        raise RuntimeError(
            "this node has no secure-aggregation state for the run: the key setup "
            "(train.vfl_keys) must come first"
        )
    record = context.state[PARTY_STATE]
    return SecAggParty.from_state({k: record[k].numpy() for k in record})


def _keep_party(context: Context, party: SecAggParty) -> None:
    context.state[PARTY_STATE] = ArrayRecord(
        {k: Array(v) for k, v in party.to_state().items()}
    )


def _knowledge(context: Context, task: VflClipTask) -> KnowledgeProvider:
    knowledge = task.knowledge_provider()
    if KNOWLEDGE_STATE in context.state:
        record = context.state[KNOWLEDGE_STATE]
        knowledge.load_state_arrays({k: record[k].numpy() for k in record})
    return knowledge


def _publish(
    context: Context, task: VflClipTask, knowledge: KnowledgeProvider, round_id: int
) -> RecordDict:
    """Keep the provider's state on the node; reply with ``T`` and the context."""
    context.state[KNOWLEDGE_STATE] = ArrayRecord(
        {k: Array(v) for k, v in knowledge.state_arrays().items()}
    )
    return RecordDict(
        {
            TEXT: to_record(knowledge.text_features(round_id)),
            ARRAYS: state_to_record(task.exchanged(knowledge.model), "fp32"),
        }
    )


def role_reply(msg: Message, context: Context) -> RecordDict:
    """``query.vfl_role``: this node's role and, for image providers, its site."""
    role = resolve_role(context.node_config, _task(context).cfg)
    site = -1 if role.site is None else role.site
    return RecordDict({CONFIG: ConfigRecord({"role": role.role, "site": site})})


def advertise_keys(msg: Message, context: Context) -> RecordDict:
    """``train.vfl_keys``: a fresh party for this run; only public keys leave."""
    role = resolve_role(context.node_config, _task(context).cfg)
    if role.site is None:
        raise RuntimeError("the knowledge provider takes no part in secure aggregation")
    party = SecAggParty(role.site)
    _keep_party(context, party)
    return RecordDict({REPLY: to_record(party.advertise())})


def party_step(
    step: Callable[[SecAggParty, Any], WireMessage | None], kind: type[WireMessage]
) -> Work:
    """A handler running one party step on the request (state kept on the node).

    ``vfl_shares``: check the directory, send encrypted mask-key shares;
    ``vfl_ready``: keep the peers' shares; ``vfl_unmask``: reveal the shares
    the server needs to remove this round's masks.
    """

    def work(msg: Message, context: Context) -> RecordDict:
        party = _party(context)
        reply = step(party, from_record(kind, msg.content[REQUEST]))
        _keep_party(context, party)
        if reply is None:
            return RecordDict({METRICS: metric_record({"ready": 1})})
        return RecordDict({REPLY: to_record(reply)})

    return work


def mask_vector(msg: Message, context: Context, faults: Faults) -> RecordDict:
    """``train.vfl_mask``: ``[G_i, loss_i, N_i]`` or statistics, masked."""
    faults(msg, context)
    task, party = _task(context), _party(context)
    config = msg.content[CONFIG]
    job = ProviderJob(
        "train" if config["phase"] == "train" else "evaluate",
        from_record(TextFeatures, msg.content[TEXT]),
        int(config["batch-seed"]),
    )
    vector = provider_vector(task.image_provider(context.node_config), task.cfg, job)
    request = from_record(MaskRequest, msg.content[REQUEST])
    masked = party.mask(request, vector, secagg_codec(task.cfg, party.num_parties))
    _keep_party(context, party)
    return RecordDict({REPLY: to_record(masked)})


def publish_text(msg: Message, context: Context) -> RecordDict:
    """``train.vfl_text``: ``T`` of the current (or a resumed) context."""
    task = _task(context)
    knowledge = _knowledge(context, task)
    if ARRAYS in msg.content:  # resuming: context from the last checkpoint
        task.load_exchanged(knowledge.model, record_to_state(msg.content[ARRAYS]))
    return _publish(context, task, knowledge, int(msg.content[CONFIG][SERVER_ROUND]))


def apply_gradient(msg: Message, context: Context) -> RecordDict:
    """``train.vfl_apply``: Adam step on the secure sum; reply with the new ``T``."""
    task = _task(context)
    knowledge = _knowledge(context, task)
    aggregate = from_record(AggregatedGradient, msg.content[REQUEST])
    step = knowledge.apply(aggregate)
    reply = _publish(context, task, knowledge, aggregate.round)
    reply[METRICS] = metric_record(step)
    return reply


TRAIN_ACTIONS: dict[str, Work] = {
    "vfl_keys": advertise_keys,
    "vfl_shares": party_step(SecAggParty.receive_directory, KeyDirectory),
    "vfl_ready": party_step(SecAggParty.receive_setup_shares, SetupSharesDelivery),
    "vfl_unmask": party_step(SecAggParty.unmask, UnmaskRequest),
    "vfl_text": publish_text,
    "vfl_apply": apply_gradient,
}


def register(app: ClientApp, guarded: Guard, faults: Faults) -> None:
    """Add the VFL-CLIP actions to ``app``; ``guarded`` turns errors into replies.

    ``faults`` runs the scripted faults (``faults=raise@2:0``) before masking,
    so tests can make an image provider fail before it sends its input.
    """

    def handler(work: Work) -> Callable[[Message, Context], Message]:
        def handle(msg: Message, context: Context) -> Message:
            return guarded(msg, context, lambda: work(msg, context))

        return handle

    app.query(ROLE_ACTION)(handler(role_reply))
    app.train("vfl_mask")(handler(partial(mask_vector, faults=faults)))
    for action, work in TRAIN_ACTIONS.items():
        app.train(action)(handler(work))
