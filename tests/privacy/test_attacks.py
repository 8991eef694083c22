"""A malicious server with only the messages it receives tries to unmask one party.

Every attack ends in :func:`best_reconstruction` of the target's input from
the recorded messages; "nothing recovered" means the reconstruction is
uniform ring noise, uncorrelated with the input. Positive controls hand the
same code the one secret the protocol withholds and show it then recovers
the input to the fixed-point step, so each test fails if that secret leaks.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from fedmed.privacy import (
    FixedPointCodec,
    ProtocolError,
    secure_sum,
    setup_inprocess,
)
from fedmed.privacy.keys import pair_secret, round_pair_key
from tests.privacy.adversary import (
    ServerView,
    ask,
    best_reconstruction,
    colluder_keys,
    colluder_point,
    open_round,
    recording_channel,
    recovered_nothing,
    uniformity,
)

DIM = 3584  # VFL-CLIP's 7 x 512
TARGET = 4


def _federation(n, seed=0):
    server, parties = setup_inprocess(list(range(n)))
    view = ServerView(server.directory)
    codec = FixedPointCodec(32, 1.0, n)
    rng = np.random.default_rng(seed)
    rounds = {r: {p: rng.uniform(-1, 1, DIM) for p in range(n)} for r in range(1, 5)}
    return server, parties, view, codec, rounds


def _true_pair_keys(parties, target, round_id):
    """What a protocol leaking the target's round pair keys would give away."""
    party = parties[target]
    directory = party._directory()
    keys = {}
    for peer in directory.neighbours(target):
        secret = pair_secret(
            party._key, directory.public_key(peer), directory.run_id, target, peer
        )
        pair = (min(target, peer), max(target, peer))
        keys[round_id, *pair] = round_pair_key(secret, directory.run_id, round_id)
    return keys


def _claim_dropped(server, view, parties, round_id, vectors, codec, target):
    """A round whose masked inputs all arrive but ``target`` is listed dropped."""
    open_round(server, view, parties, round_id, vectors, codec)
    others = [p for p in parties if p != target]
    return ask(view, parties, round_id, {p: others for p in others})


@pytest.mark.parametrize("n", [10, 20])  # complete graph; sparse (k = 14)
def test_cross_round_dropout_claims_recover_nothing_of_an_earlier_round(n):
    # Prepare: round 1 is honest (the target survives: its seed is revealed);
    # round 2 lists the target dropped although its input arrived; in round 3
    # it really drops. The server keeps every message.
    server, parties, view, codec, rounds = _federation(n)
    channel = recording_channel(view, parties, rounds[1], codec)
    secure_sum(server, channel, 1)
    refusals = _claim_dropped(server, view, parties, 2, rounds[2], codec, TARGET)
    channel.vectors = lambda pid, _job: rounds[3][pid]
    channel.drop_before_masking = [TARGET]
    secure_sum(server, channel, 3)
    # Execute
    recovered = best_reconstruction(view, TARGET, 1)
    control = best_reconstruction(
        view, TARGET, 1, extra_keys=_true_pair_keys(parties, TARGET, 1)
    )
    # Assert: the server holds the round-1 seed and pair keys of rounds 2 and 3
    keys = view.pair_keys()
    assert not refusals
    assert len(view.seed_shares(1, TARGET)) >= server.directory.threshold
    degree = server.directory.degree
    assert sum(TARGET in k[1:] for k in keys if k[0] in (2, 3)) == 2 * degree
    assert recovered_nothing(uniformity(recovered, rounds[1][TARGET], codec))
    assert uniformity(control, rounds[1][TARGET], codec)["error"] <= 1 / codec.scale


def test_false_dropout_reveals_the_pair_keys_but_never_the_input():
    # Prepare: every input arrives; all parties but the target are told it dropped
    server, parties, view, codec, rounds = _federation(10)
    refusals = _claim_dropped(server, view, parties, 1, rounds[1], codec, TARGET)
    # Execute: even a later round that reveals the target's next seed adds nothing
    channel = recording_channel(view, parties, rounds[2], codec)
    secure_sum(server, channel, 2)
    recovered = best_reconstruction(view, TARGET, 1)
    colluders = [p for p in server.directory.neighbours(TARGET)][:6]
    points = [colluder_point(view, parties[c], TARGET, 1) for c in colluders]
    control = best_reconstruction(view, TARGET, 1, extra_points=points)
    # Assert: all nine pair keys are out; the self mask alone hides the input
    assert not refusals
    assert sum(k[0] == 1 and TARGET in k[1:] for k in view.pair_keys()) == 9
    assert view.seed_shares(1, TARGET) == []
    assert recovered_nothing(uniformity(recovered, rounds[1][TARGET], codec))
    assert uniformity(control, rounds[1][TARGET], codec)["error"] <= 1 / codec.scale


def test_a_party_reveals_one_secret_per_neighbour_and_round():
    # Prepare: party 0 answers round 1 with the target as a survivor
    server, parties, view, codec, rounds = _federation(10)
    open_round(server, view, parties, 1, rounds[1], codec)
    everyone = list(range(10))
    assert not ask(view, parties, 1, {0: everyone})
    # Execute: the server now claims the target dropped, to the same party
    refusals = ask(view, parties, 1, {0: [p for p in everyone if p != TARGET]})
    # Assert
    assert isinstance(refusals[0], ProtocolError)
    assert "each round is unmasked once" in str(refusals[0])
    assert view.answers[1][0][1].pair_keys == ()


def test_a_party_listed_as_dropped_reveals_nothing():
    # Prepare
    server, parties, view, codec, rounds = _federation(10)
    open_round(server, view, parties, 1, rounds[1], codec)
    # Execute
    refusals = ask(view, parties, 1, {TARGET: [p for p in range(10) if p != TARGET]})
    # Assert
    assert "listed as dropped" in str(refusals[TARGET])


def test_equivocation_gets_at_most_one_kind_of_secret_per_neighbour():
    # Prepare: n = 10, k = 9, t = 6. The server asks 3 neighbours for seed
    # shares ("target survived"), tells the target those 3 dropped (the most
    # it accepts: k - t) and the other 6 that the target dropped.
    server, parties, view, codec, rounds = _federation(10)
    open_round(server, view, parties, 1, rounds[1], codec)
    near = list(server.directory.neighbours(TARGET))
    seed_givers, key_givers = near[:3], near[3:]
    everyone = set(range(10))
    claims = {p: everyone for p in seed_givers}
    claims |= {p: everyone - {TARGET} for p in key_givers}
    claims[TARGET] = everyone - set(seed_givers)
    greedy = {TARGET: everyone - set(near[:4])}  # one more dropped neighbour
    # Execute
    refusals = ask(view, parties, 1, claims)
    recovered = best_reconstruction(view, TARGET, 1)
    # Assert: every pair key is out, but only 3 of the 6 seed shares needed
    assert not refusals
    assert sum(TARGET in k[1:] for k in view.pair_keys()) == 9
    assert len(view.seed_shares(1, TARGET)) == 3 < server.directory.threshold
    assert recovered_nothing(uniformity(recovered, rounds[1][TARGET], codec))
    open_round(server, view, parties, 2, rounds[2], codec)
    assert "refusing to reveal" in str(ask(view, parties, 2, greedy)[TARGET])


def test_no_survivor_lists_shown_to_five_parties_unmask_one_of_them():
    # Prepare: n = 5, k = 4, t = 3. Every split of the target's neighbours into
    # seed givers (told it survived) and key givers (told it dropped), times
    # every set of neighbours the target itself is told dropped: 256 attempts.
    server, parties, view, codec, rounds = _federation(5)
    near = server.directory.neighbours(TARGET)
    everyone = set(range(5))
    splits = list(itertools.product([False, True], repeat=len(near)))
    outcomes = []
    # Execute
    for round_id, (gives_seed, told) in enumerate(
        itertools.product(splits, splits), start=1
    ):
        vectors = {p: np.zeros(8) for p in everyone}
        open_round(server, view, parties, round_id, vectors, codec)
        claims = {
            p: everyone if seed else everyone - {TARGET}
            for p, seed in zip(near, gives_seed, strict=True)
        }
        claims[TARGET] = everyone - {p for p, d in zip(near, told, strict=True) if d}
        ask(view, parties, round_id, claims)
        keys = [k for k in view.pair_keys() if k[0] == round_id and TARGET in k[1:]]
        outcomes.append((len(view.seed_shares(round_id, TARGET)), len(keys)))
    # Assert: never t seed shares together with all k pair keys
    threshold, degree = server.directory.threshold, server.directory.degree
    assert not [o for o in outcomes if o[0] >= threshold and o[1] == degree]
    assert max(o[0] for o in outcomes) == degree  # each kind alone is reachable
    assert max(o[1] for o in outcomes) == degree


@pytest.mark.parametrize(("colluding", "unmasked"), [(2, False), (3, True)])
def test_colluding_neighbours_below_2t_minus_k_do_not_help(colluding, unmasked):
    # Prepare: n = 10, k = 9, t = 6, so 2t - k = 3 colluders are the limit.
    # Colluders hand over their seed shares and pair keys; the server asks
    # t - c honest neighbours for seed shares and tells the target they dropped.
    server, parties, view, codec, rounds = _federation(10)
    open_round(server, view, parties, 1, rounds[1], codec)
    near = list(server.directory.neighbours(TARGET))
    colluders, honest = near[:colluding], near[colluding:]
    threshold, degree = server.directory.threshold, server.directory.degree
    seed_givers = honest[: min(threshold - colluding, degree - threshold)]
    everyone = set(range(10))
    claims = {p: everyone for p in seed_givers}
    claims |= {p: everyone - {TARGET} for p in honest if p not in seed_givers}
    claims[TARGET] = everyone - set(seed_givers)
    # Execute
    refusals = ask(view, parties, 1, claims)
    leaked = {}
    for c in colluders:
        leaked |= colluder_keys(parties[c], TARGET, 1)
    points = [colluder_point(view, parties[c], TARGET, 1) for c in colluders]
    recovered = best_reconstruction(view, TARGET, 1, leaked, points)
    # Assert
    stats = uniformity(recovered, rounds[1][TARGET], codec)
    assert not refusals
    if unmasked:  # the bound is tight: the attack code does work
        assert stats["error"] <= 1 / codec.scale
    else:
        assert recovered_nothing(stats)
