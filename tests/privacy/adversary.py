"""A server that keeps all it receives, lies at will, and tries to unmask a party.

:class:`ServerView` holds what a server legitimately receives across rounds:
the directory, the masked inputs, and every unmask response together with
the survivor list it was sent (needed to read the response's rows). The
attacker's best reconstruction (:func:`best_reconstruction`) uses nothing
else, except in positive controls, where a test hands it secrets a
colluding party or a broken protocol would give away, to show the same
code then recovers the input exactly.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np

from fedmed.privacy import FixedPointCodec, InProcessChannel, shamir
from fedmed.privacy.directory import Directory
from fedmed.privacy.keys import (
    ShareContext,
    open_share,
    pair_secret,
    round_pair_key,
    share_cipher,
)
from fedmed.privacy.masking import add_masks, mask_sign, self_mask_key
from fedmed.privacy.messages import (
    MaskedInput,
    UnmaskRequest,
    UnmaskResponse,
)
from fedmed.privacy.party import SecAggParty
from fedmed.privacy.server import RoundStart, SecAggServer


@dataclass
class ServerView:
    """Everything the server received (and the lists it sent), by round and party."""

    directory: Directory
    active: dict[int, dict[int, tuple[int, ...]]] = field(
        default_factory=lambda: defaultdict(dict)
    )
    inputs: dict[int, dict[int, MaskedInput]] = field(
        default_factory=lambda: defaultdict(dict)
    )
    answers: dict[int, dict[int, tuple[tuple[int, ...], UnmaskResponse]]] = field(
        default_factory=lambda: defaultdict(dict)
    )

    def round_neighbours(self, round_id: int, party: int) -> tuple[int, ...]:
        active = self.active[round_id][party]
        return tuple(p for p in self.directory.neighbours(party) if p in active)

    def seed_shares(self, round_id: int, owner: int) -> list[tuple[int, int]]:
        """Revealed ``(x, share)`` points of ``owner``'s self-mask seed in a round."""
        points = []
        for holder, (survivors, response) in self.answers[round_id].items():
            alive = [
                p for p in self.round_neighbours(round_id, holder) if p in survivors
            ]
            if owner in alive:
                share = response.self_mask_shares[alive.index(owner)]
                points.append((self.directory.point(holder), share))
        return points

    def pair_keys(self) -> dict[tuple[int, int, int], bytes]:
        """Every revealed round pair key, by ``(round, low id, high id)``."""
        keys = {}
        for round_id, answers in self.answers.items():
            for holder, (survivors, response) in answers.items():
                near = self.round_neighbours(round_id, holder)
                gone = [p for p in near if p not in survivors]
                for peer, key in zip(gone, response.pair_keys, strict=True):
                    keys[round_id, min(holder, peer), max(holder, peer)] = key
        return keys


def open_round(
    server: SecAggServer,
    view: ServerView,
    parties: Mapping[int, SecAggParty],
    round_id: int,
    vectors: Mapping[int, np.ndarray],
    codec: FixedPointCodec,
) -> dict[int, MaskedInput]:
    """Open a round (honestly) and collect every masked input."""
    starts: dict[int, RoundStart] = server.open_round(round_id)
    for pid, start in starts.items():
        view.active[round_id][pid] = view.directory.members(start.request.active, "")
        masked = parties[pid].mask(start.request, vectors[pid], codec, start.directory)
        view.inputs[round_id][pid] = masked
    return view.inputs[round_id]


def crafted_unmask(
    view: ServerView, round_id: int, recipient: int, survivors: Iterable[int]
) -> UnmaskRequest:
    """An unmask request telling ``recipient`` that exactly ``survivors`` survived."""
    listed = tuple(sorted(survivors))
    alive = [p for p in view.round_neighbours(round_id, recipient) if p in listed]
    shares = tuple(
        view.inputs[round_id][p].shares[
            view.round_neighbours(round_id, p).index(recipient)
        ]
        for p in alive
    )
    bitmap = view.directory.bitmap(listed)
    return UnmaskRequest(round_id, recipient, bitmap, shares)


def ask(
    view: ServerView,
    parties: Mapping[int, SecAggParty],
    round_id: int,
    claims: Mapping[int, Iterable[int]],
) -> dict[int, Exception]:
    """Send each party its own survivor list; keep answers, return refusals."""
    refusals = {}
    for pid, survivors in claims.items():
        listed = tuple(sorted(survivors))
        try:
            response = parties[pid].unmask(crafted_unmask(view, round_id, pid, listed))
        except Exception as refusal:  # noqa: BLE001 - a refusal is what we test
            refusals[pid] = refusal
            continue
        view.answers[round_id][pid] = (listed, response)
    return refusals


def best_reconstruction(
    view: ServerView,
    target: int,
    round_id: int,
    extra_keys: Mapping[tuple[int, int, int], bytes] | None = None,
    extra_points: Iterable[tuple[int, int]] = (),
) -> np.ndarray:
    """``target``'s masked input of ``round_id`` minus every mask the server can build.

    A pair key of the round is used if revealed; otherwise, as a cross-round
    attacker would, a key of the same pair from any other round. The
    self mask is removed if ``t`` seed shares of the round are known.
    """
    directory = view.directory
    recovered = view.inputs[round_id][target].masked.copy()
    keys = {**view.pair_keys(), **(extra_keys or {})}
    points = view.seed_shares(round_id, target) + list(extra_points)
    masks, signs = [], []
    if len({x for x, _ in points}) >= directory.threshold:
        seed = shamir.reconstruct(
            points[: directory.threshold], directory.threshold, ""
        )
        masks.append(self_mask_key(seed, directory.run_id, round_id))
        signs.append(-1)
    for peer in view.round_neighbours(round_id, target):
        pair = (min(target, peer), max(target, peer))
        candidates = [k for (r, *p), k in keys.items() if tuple(p) == pair]
        key = keys.get((round_id, *pair), candidates[0] if candidates else None)
        if key is not None:
            masks.append(key)
            signs.append(-mask_sign(target, peer))
    add_masks(recovered, masks, signs)
    return recovered


# ---------------------------------------------------------------- colluders
def colluder_keys(
    colluder: SecAggParty, target: int, round_id: int
) -> dict[tuple[int, int, int], bytes]:
    """The round pair key a colluding neighbour holds with ``target``."""
    state = colluder._state  # a colluder hands the server its whole state
    directory = colluder._directory()
    secret = pair_secret(
        colluder._key,
        directory.public_key(target),
        state.run_id,
        colluder.party,
        target,
    )
    pair = (min(target, colluder.party), max(target, colluder.party))
    return {(round_id, *pair): round_pair_key(secret, state.run_id, round_id)}


def colluder_point(
    view: ServerView, colluder: SecAggParty, target: int, round_id: int
) -> tuple[int, int]:
    """The colluder's share of ``target``'s seed, opened with the colluder's key."""
    directory = colluder._directory()
    secret = pair_secret(
        colluder._key,
        directory.public_key(target),
        directory.run_id,
        colluder.party,
        target,
    )
    cipher = share_cipher(secret, directory.run_id, target, colluder.party)
    row = view.round_neighbours(round_id, target).index(colluder.party)
    blob = view.inputs[round_id][target].shares[row]
    context = ShareContext(
        directory.run_id, directory.digest, round_id, target, colluder.party
    )
    return directory.point(colluder.party), open_share(cipher, blob, context)


# ---------------------------------------------------------------- statistics
def uniformity(
    recovered: np.ndarray, values: np.ndarray, codec: FixedPointCodec
) -> dict[str, float]:
    """How much of ``values`` a reconstruction reveals.

    ``chi2``: chi-square statistic of the top 4 bits of ``recovered - x``
    (16 bins; uniform ring noise gives ~15, p = 1e-9 at ~70); ``correlation``
    of the decoded reconstruction with ``values``; ``close``: fraction of
    entries decoded within 1e-3 of the true value; ``error``: largest error.
    """
    noise = recovered - codec.encode(values)
    counts = np.bincount((noise >> (codec.bits - 4)).astype(np.int64), minlength=16)
    expected = noise.size / 16
    decoded = codec.decode(recovered)
    return {
        "chi2": float(((counts - expected) ** 2 / expected).sum()),
        "correlation": float(np.corrcoef(decoded, values)[0, 1]),
        "close": float(np.mean(np.abs(decoded - values) < 1e-3)),
        "error": float(np.abs(decoded - values).max()),
    }


def recovered_nothing(stats: Mapping[str, float]) -> bool:
    """The reconstruction is noise: uniform, uncorrelated, nowhere close."""
    return (
        stats["chi2"] < 70 and abs(stats["correlation"]) < 0.1 and stats["close"] < 0.01
    )


def recording_channel(
    view: ServerView,
    parties: Mapping[int, SecAggParty],
    vectors: Mapping[int, np.ndarray],
    codec: FixedPointCodec,
) -> InProcessChannel:
    """An in-process channel whose traffic the view records (honest rounds)."""
    return _Recording(parties, lambda pid, _job: vectors[pid], codec, view=view)


@dataclass
class _Recording(InProcessChannel):
    view: ServerView | None = None
    _round: int = -1

    def mask(self, starts, job):
        for pid, start in starts.items():
            self._round = start.request.round_id
            members = self.view.directory.members(start.request.active, "")
            self.view.active[self._round][pid] = members
        inputs = super().mask(starts, job)
        self.view.inputs[self._round].update(inputs)
        return inputs

    def unmask(self, requests):
        replies = super().unmask(requests)
        for pid, response in replies.items():
            survivors = self.view.directory.members(requests[pid].survivors, "")
            self.view.answers[self._round][pid] = (survivors, response)
        return replies
