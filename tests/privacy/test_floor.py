"""The parties' floor: a server cannot lower the threshold or shrink the party set."""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import pytest

from fedmed.privacy import (
    FixedPointCodec,
    Floor,
    ProtocolError,
    SecAggParty,
    secure_sum_inprocess,
    setup_inprocess,
)
from fedmed.privacy.directory import Directory
from fedmed.privacy.messages import KeyDirectory, KeyRequest, MaskRequest
from tests.privacy.adversary import ServerView, ask, open_round

CODEC = FixedPointCodec(32, 1.0, 8)


def _advertised(n, **floor):
    """Fresh parties that answered one key request, and that directory's parts."""
    parties = {p: SecAggParty(p, **floor) for p in range(n)}
    request = KeyRequest(os.urandom(16))
    ads = [parties[p].advertise(request) for p in parties]
    keys = tuple(ad.public_key for ad in ads)
    return parties, request.run_id, tuple(parties), keys


def _first_round(party, run_id, ids, keys, threshold, degree, active=None):
    """Deliver a directory with a round-1 mask request to ``party``."""
    directory = KeyDirectory(run_id, threshold, degree, ids, keys)
    view = Directory.from_message(directory)
    members = ids if active is None else active
    request = MaskRequest(run_id, 1, view.bitmap(members))
    codec = FixedPointCodec(32, 1.0, len(ids))
    return party.mask(request, np.zeros(4), codec, directory)


def test_a_threshold_below_two_thirds_of_the_neighbourhood_is_refused():
    # Prepare: 10 parties, 9 neighbours each: the floor is ceil(2 * 9 / 3) = 6
    parties, run_id, ids, keys = _advertised(10)
    codec = FixedPointCodec(32, 1.0, 10)
    # Execute / Assert: the server asks for 5, then for 2 through the protocol
    with pytest.raises(ProtocolError, match="threshold 5 among 9 neighbours; this "):
        _first_round(parties[0], run_id, ids, keys, threshold=5, degree=9)
    accepted = _first_round(parties[1], run_id, ids, keys, threshold=6, degree=9)
    server, inprocess = setup_inprocess(list(range(10)), threshold=2)
    vectors = {p: np.zeros(4) for p in range(10)}
    with pytest.raises(ProtocolError, match="requires at least 6"):
        secure_sum_inprocess(server, inprocess, 1, vectors, codec)
    assert len(accepted.shares) == 9


def test_a_party_applies_its_own_floor_not_the_servers():
    # Prepare: these parties want 80 % of their neighbours
    parties, run_id, ids, keys = _advertised(10, min_threshold_fraction=0.8)
    # Execute / Assert: the server's default (6 of 9) is refused, 8 of 9 accepted
    with pytest.raises(ProtocolError, match="requires at least 8"):
        _first_round(parties[0], run_id, ids, keys, threshold=6, degree=9)
    _first_round(parties[1], run_id, ids, keys, threshold=8, degree=9)
    with pytest.raises(ValueError, match=r"must be in \(1/2, 1\]"):
        SecAggParty(0, min_threshold_fraction=0.5)
    with pytest.raises(ValueError, match="min_parties must be >= 2"):
        Floor(min_parties=1)


def test_a_thinner_graph_than_the_parties_derive_is_refused():
    # Prepare: 50 parties derive at least 18 neighbours each
    parties, run_id, ids, keys = _advertised(50)
    # Execute / Assert
    with pytest.raises(ProtocolError, match=r"degree must be in \[18, 49\]"):
        _first_round(parties[0], run_id, ids, keys, threshold=4, degree=6)
    masked = _first_round(parties[0], run_id, ids, keys, threshold=12, degree=18)
    assert len(masked.shares) == 18


def test_shrinking_the_party_set_below_the_floor_is_refused():
    # Prepare: sites that know the run has at least 5 of them (7 in the last part)
    parties, run_id, ids, keys = _advertised(6, min_parties=5)
    # Execute / Assert: a directory of 4, a round of 4, 6 survivors of 8
    with pytest.raises(ProtocolError, match="lists 4 parties, fewer than"):
        _first_round(parties[0], run_id, ids[:4], keys[:4], threshold=2, degree=3)
    with pytest.raises(ProtocolError, match="4 active parties, fewer than"):
        _first_round(parties[0], run_id, ids, keys, 4, 5, active=ids[:4])
    server, inprocess = setup_inprocess(list(range(8)), min_parties=7)
    view = ServerView(server.directory)
    open_round(server, view, inprocess, 1, {p: np.zeros(4) for p in range(8)}, CODEC)
    refusals = ask(view, inprocess, 1, {0: range(6)})  # 5 of 7 neighbours: >= t
    assert "6 survivors, fewer than this party's min_parties=7" in str(refusals[0])


def test_a_round_with_too_few_active_neighbours_is_refused():
    # Prepare
    parties, run_id, ids, keys = _advertised(10)
    # Execute / Assert: only 2 of party 0's 9 neighbours are said to be active
    with pytest.raises(ProtocolError, match="lists 2 of its neighbours as active"):
        _first_round(parties[0], run_id, ids, keys, 6, 9, active=ids[:3])


def test_the_directory_is_bound_to_the_advertised_run_and_key():
    # Prepare
    parties, run_id, ids, keys = _advertised(5)
    other_key = tuple(reversed(keys[:2])) + keys[2:]
    # Execute / Assert: a run id chosen after the keys, a substituted key
    with pytest.raises(ProtocolError, match="another run id"):
        _first_round(parties[0], os.urandom(16), ids, keys, 3, 4)
    with pytest.raises(ProtocolError, match="another public key for party 0"):
        _first_round(parties[0], run_id, ids, other_key, 3, 4)
    with pytest.raises(ProtocolError, match="already advertised for another run"):
        parties[0].advertise(KeyRequest(os.urandom(16)))


def test_a_second_different_directory_is_refused():
    # Prepare
    parties, run_id, ids, keys = _advertised(5)
    party = parties[0]
    _first_round(party, run_id, ids, keys, 3, 4)
    same = KeyDirectory(run_id, 3, 4, ids, keys)
    view = Directory.from_message(same)
    codec = FixedPointCodec(32, 1.0, 5)
    # Execute
    again = party.mask(
        MaskRequest(run_id, 2, view.bitmap(ids)), np.zeros(4), codec, same
    )
    changed = dataclasses.replace(same, threshold=4)
    # Assert: the same directory again is fine (a resend), another one is not
    assert again.round_id == 2
    with pytest.raises(ProtocolError, match="a second, different key directory"):
        party.mask(
            MaskRequest(run_id, 3, view.bitmap(ids)), np.zeros(4), codec, changed
        )
