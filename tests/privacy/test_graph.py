"""The SecAgg+ neighbour graph: derived by every party, checked, and sums stay exact."""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import pytest

from fedmed.privacy import (
    FixedPointCodec,
    ProtocolError,
    RecoveryFailed,
    ShareTampered,
    secure_sum_inprocess,
    setup_inprocess,
)
from fedmed.privacy.directory import Directory
from fedmed.privacy.graph import default_degree, neighbour_positions
from tests.privacy.adversary import ServerView, crafted_unmask, open_round


def _connected(neighbours):
    seen, frontier = {0}, [0]
    while frontier:
        for q in neighbours[frontier.pop()]:
            if q not in seen:
                seen.add(q)
                frontier.append(q)
    return len(seen) == len(neighbours)


def test_degree_grows_with_log_n_and_small_runs_are_complete():
    # Execute
    degrees = {n: default_degree(n) for n in (2, 3, 10, 13, 14, 50, 100, 1000)}
    # Assert
    assert degrees == {2: 1, 3: 2, 10: 9, 13: 12, 14: 12, 50: 18, 100: 20, 1000: 30}


@pytest.mark.parametrize("n", [14, 50, 100, 257])
def test_sparse_graph_is_regular_symmetric_and_connected(n):
    # Execute
    k = default_degree(n)
    neighbours = neighbour_positions(os.urandom(32), n, k)
    # Assert
    assert all(
        len(set(near)) == k and p not in near for p, near in enumerate(neighbours)
    )
    assert all(p in neighbours[q] for p, near in enumerate(neighbours) for q in near)
    assert _connected(neighbours)


def test_graph_is_a_function_of_the_whole_directory():
    # Prepare: a directory of 50 parties and the same with one key changed
    keys = tuple(os.urandom(32) for _ in range(50))
    directory = Directory(b"r" * 16, 12, 18, tuple(range(50)), keys)
    changed = dataclasses.replace(directory, public_keys=(os.urandom(32), *keys[1:]))
    again = Directory(b"r" * 16, 12, 18, tuple(range(50)), keys)
    # Execute
    graphs = [[d.neighbours(p) for p in range(50)] for d in (directory, changed, again)]
    # Assert
    assert graphs[0] == graphs[2]
    assert graphs[0] != graphs[1]


def test_parties_and_server_derive_the_same_sparse_graph_and_sum_exactly():
    # Prepare: 30 parties, 16 neighbours each, threshold 11
    ids = list(range(100, 130))
    server, parties = setup_inprocess(ids, through_bytes=True)
    codec = FixedPointCodec(64, 10.0, 30)
    rng = np.random.default_rng(1)
    vectors = {p: rng.uniform(-10, 10, 33) for p in ids}
    # Execute
    result = secure_sum_inprocess(server, parties, 1, vectors, codec)
    # Assert
    directory = server.directory
    assert (directory.degree, directory.threshold) == (16, 11)
    assert all(parties[p].neighbours == directory.neighbours(p) for p in ids)
    np.testing.assert_allclose(result.values, sum(vectors.values()), atol=1e-9)


def test_sparse_round_survives_a_dropout_and_a_silent_non_neighbour():
    # Prepare: a party drops before masking; another, not its neighbour,
    # never answers the unmask request
    ids = list(range(30))
    server, parties = setup_inprocess(ids)
    codec = FixedPointCodec(64, 10.0, 30)
    rng = np.random.default_rng(2)
    vectors = {p: rng.uniform(-10, 10, 33) for p in ids}
    dropped = 0
    silent = next(p for p in ids[1:] if p not in server.directory.neighbours(dropped))
    neighbour = server.directory.neighbours(dropped)[0]
    # Execute
    result = secure_sum_inprocess(
        server, parties, 1, vectors, codec, [dropped], [silent]
    )
    # Assert: contributions exact; a silent *neighbour* of a dropout loses the sum
    expected = sum(vectors[p] for p in ids if p != dropped)
    np.testing.assert_allclose(result.values, expected, atol=1e-9)
    assert result.dropped == (dropped,)
    with pytest.raises(RecoveryFailed, match=f"survivor {neighbour} did not answer"):
        secure_sum_inprocess(server, parties, 2, vectors, codec, [dropped], [neighbour])


def test_a_party_refuses_shares_routed_for_another_neighbour_set():
    # Prepare: a sparse round; the server routes party 0's shares as if one
    # more party were its neighbour (a share from a non-neighbour added)
    ids = list(range(20))
    server, parties = setup_inprocess(ids)
    view = ServerView(server.directory)
    codec = FixedPointCodec(32, 1.0, 20)
    open_round(server, view, parties, 1, {p: np.zeros(8) for p in ids}, codec)
    honest = crafted_unmask(view, 1, 0, ids)
    stranger = next(p for p in ids[1:] if p not in server.directory.neighbours(0))
    extra = view.inputs[1][stranger].shares[0]
    padded = dataclasses.replace(honest, shares=(*honest.shares, extra))
    # Execute / Assert
    with pytest.raises(ProtocolError, match="delivers 15 seed shares, but 14"):
        parties[0].unmask(padded)
    with pytest.raises(ProtocolError, match="delivers 13 seed shares, but 14"):
        parties[0].unmask(dataclasses.replace(honest, shares=honest.shares[1:]))
    assert len(parties[0].unmask(honest).self_mask_shares) == 14


def test_parties_with_different_directories_cannot_read_each_others_shares():
    # Prepare: the server hands party 0 a directory with another (valid)
    # threshold than everyone else's, hoping to split their views
    ids = list(range(10))
    server, parties = setup_inprocess(ids)
    starts = server.open_round(1)
    codec = FixedPointCodec(32, 1.0, 10)
    odd = dataclasses.replace(starts[0].directory, threshold=7)
    inputs = {
        p: parties[p].mask(
            start.request, np.zeros(8), codec, odd if p == 0 else start.directory
        )
        for p, start in starts.items()
    }
    requests = server.route_masked_inputs(list(inputs.values()))
    # Execute / Assert: party 1 cannot open party 0's share (nor 0 anyone's)
    with pytest.raises(ShareTampered, match="from party 0 for round 1"):
        parties[1].unmask(requests[1])
    with pytest.raises(ShareTampered, match="party 0: the self-mask share from"):
        parties[0].unmask(requests[0])
