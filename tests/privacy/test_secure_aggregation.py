"""Secure aggregation end to end: masking, exact sums, dropouts, tampering, rules."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from fedmed.privacy import (
    FixedPointCodec,
    ProtocolError,
    RecoveryFailed,
    SecAggParty,
    ShareTampered,
    ValueOutOfRange,
    secure_sum_inprocess,
    setup_inprocess,
    shamir,
)

DIM = 257


def _vectors(parties, seed=0, scale=1.0):
    rng = np.random.default_rng(seed)
    return {p: rng.uniform(-scale, scale, size=DIM) for p in parties}


def _plain_sum(vectors, members):
    return np.sum([vectors[p] for p in members], axis=0)


def _masked_round(server, parties, round_id, vectors, codec):
    """Open a round by hand; every party masks; the server routes the shares."""
    starts = server.open_round(round_id)
    inputs = [
        parties[p].mask(s.request, vectors[p], codec, s.directory)
        for p, s in starts.items()
    ]
    return inputs, server.route_masked_inputs(inputs)


def test_masked_inputs_hide_values_and_sum_is_exact():
    # Prepare
    ids = [3, 8, 11, 2**63 + 5]  # Flower node ids are unsigned 64-bit
    server, parties = setup_inprocess(ids, through_bytes=True)
    codec = FixedPointCodec(bits=32, value_range=1.0, num_summands=len(ids))
    vectors = _vectors(ids)
    # Execute
    inputs, requests = _masked_round(server, parties, 1, vectors, codec)
    result = server.unmask([parties[p].unmask(r) for p, r in requests.items()])
    # Assert: what the server receives is not the encoding of any input
    for message in inputs:
        plain = codec.encode(vectors[message.sender])
        assert np.mean(message.masked == plain) < 0.01
    exact = codec.decode(np.sum([codec.encode(vectors[p]) for p in ids], axis=0))
    np.testing.assert_array_equal(result.values, exact)
    error = np.abs(result.values - _plain_sum(vectors, ids)).max()
    assert error <= len(ids) * 0.5 / codec.scale  # each input within half a step
    assert result.contributors == tuple(ids)


def test_sum_is_exact_with_the_most_dropouts_tolerated():
    # Prepare: 7 parties, 6 neighbours, threshold 4 -> 2 may drop out
    ids = list(range(7))
    server, parties = setup_inprocess(ids)
    codec = FixedPointCodec(bits=64, value_range=10.0, num_summands=7)
    vectors = _vectors(ids, scale=10.0)
    # Execute
    result = secure_sum_inprocess(
        server, parties, 1, vectors, codec, drop_before_masking=[2, 5]
    )
    # Assert
    survivors = [0, 1, 3, 4, 6]
    assert server.directory.threshold == 4
    assert result.contributors == tuple(survivors)
    assert result.dropped == (2, 5)
    np.testing.assert_allclose(result.values, _plain_sum(vectors, survivors), atol=1e-9)


def test_one_dropout_too_many_fails_the_round_clearly():
    # Prepare
    ids = list(range(7))
    server, parties = setup_inprocess(ids)
    codec = FixedPointCodec(bits=32, value_range=1.0, num_summands=7)
    # Execute / Assert: every survivor keeps only 3 of the 4 neighbours needed
    with pytest.raises(RecoveryFailed, match="0 of 4 parties keep at least 4"):
        secure_sum_inprocess(
            server, parties, 1, _vectors(ids), codec, drop_before_masking=[0, 1, 2]
        )


def test_dropouts_during_unmasking_keep_their_input():
    # Prepare
    ids = list(range(7))
    server, parties = setup_inprocess(ids)
    codec = FixedPointCodec(bits=32, value_range=1.0, num_summands=7)
    vectors = _vectors(ids)
    # Execute
    result = secure_sum_inprocess(
        server, parties, 1, vectors, codec, drop_before_unmasking=[1, 4]
    )
    # Assert
    np.testing.assert_allclose(result.values, _plain_sum(vectors, ids), atol=1e-7)
    with pytest.raises(RecoveryFailed, match="3 shares revealed, at least 4 needed"):
        secure_sum_inprocess(
            server, parties, 2, vectors, codec, drop_before_unmasking=[0, 1, 2]
        )


def test_a_survivor_next_to_a_dropout_must_answer_the_unmask_request():
    # Prepare: only the survivor holds its round pair key with a dropped party
    ids = list(range(7))
    server, parties = setup_inprocess(ids)
    codec = FixedPointCodec(bits=32, value_range=1.0, num_summands=7)
    # Execute / Assert
    with pytest.raises(RecoveryFailed, match=r"survivor 3 did not answer .* \[2\]"):
        secure_sum_inprocess(server, parties, 1, _vectors(ids), codec, [2], [3])


def test_tampered_round_share_is_rejected():
    # Prepare: one bit of party 0's sealed share for party 1 flips on the way
    ids = [0, 1, 2]
    server, parties = setup_inprocess(ids)
    codec = FixedPointCodec(bits=32, value_range=1.0, num_summands=3)
    _, requests = _masked_round(server, parties, 1, _vectors(ids), codec)
    blob = bytearray(requests[1].shares[0])
    blob[5] ^= 0x01
    tampered = dataclasses.replace(
        requests[1], shares=(bytes(blob), *requests[1].shares[1:])
    )
    # Execute / Assert
    with pytest.raises(ShareTampered, match="from party 0 for round 1 failed"):
        parties[1].unmask(tampered)


def test_misrouted_round_share_is_rejected():
    # Prepare
    ids = [0, 1, 2, 3]
    server, parties = setup_inprocess(ids)
    codec = FixedPointCodec(bits=32, value_range=1.0, num_summands=4)
    _, requests = _masked_round(server, parties, 1, _vectors(ids), codec)
    original = requests[2]
    swapped = dataclasses.replace(
        original,
        shares=(original.shares[1], original.shares[0], *original.shares[2:]),
    )
    # Execute / Assert
    with pytest.raises(ShareTampered):
        parties[2].unmask(swapped)
    with pytest.raises(ProtocolError, match="addressed to party 2"):
        parties[1].unmask(original)


def test_share_replayed_from_an_earlier_round_is_rejected():
    # Prepare: one key per direction seals every round's shares; the nonce
    # and the associated data bind the round
    ids = [0, 1, 2]
    server, parties = setup_inprocess(ids)
    codec = FixedPointCodec(bits=32, value_range=1.0, num_summands=3)
    rounds = {}
    for round_id in (1, 2):
        _, requests = _masked_round(server, parties, round_id, _vectors(ids), codec)
        rounds[round_id] = requests[2]
    replayed = dataclasses.replace(rounds[2], shares=rounds[1].shares)
    # Execute / Assert
    with pytest.raises(ShareTampered, match="for round 2"):
        parties[2].unmask(replayed)


def test_out_of_range_input_names_party_index_and_value():
    # Prepare
    ids = [0, 1, 2]
    server, parties = setup_inprocess(ids)
    codec = FixedPointCodec(bits=32, value_range=1.0, num_summands=3)
    vectors = _vectors(ids)
    vectors[2][17] = 4.25
    # Execute / Assert
    with pytest.raises(ValueOutOfRange, match=r"party 2: value 4.25 at index 17"):
        secure_sum_inprocess(server, parties, 1, vectors, codec)


def test_a_dropped_party_rejoins_the_next_round_without_new_keys():
    # Prepare
    ids = list(range(5))
    server, parties = setup_inprocess(ids)
    codec = FixedPointCodec(bits=32, value_range=1.0, num_summands=5)
    vectors = _vectors(ids)
    first = secure_sum_inprocess(
        server, parties, 1, vectors, codec, drop_before_masking=[4]
    )
    # Execute
    second = secure_sum_inprocess(server, parties, 2, vectors, codec)
    # Assert
    assert (first.contributors, first.dropped) == ((0, 1, 2, 3), (4,))
    assert (second.contributors, second.dropped) == (tuple(ids), ())
    np.testing.assert_allclose(second.values, _plain_sum(vectors, ids), atol=1e-7)


def test_the_directory_travels_until_a_party_has_masked_once():
    # Prepare
    ids = list(range(4))
    server, parties = setup_inprocess(ids)
    codec = FixedPointCodec(bits=32, value_range=1.0, num_summands=4)
    vectors = _vectors(ids)
    first = server.open_round(1)
    inputs = [
        parties[p].mask(s.request, vectors[p], codec, s.directory)
        for p, s in first.items()
    ]
    # Execute: party 3's masked input is lost, so it gets the directory again
    requests = server.route_masked_inputs(inputs[:3])
    server.unmask([parties[p].unmask(r) for p, r in requests.items()])
    second = server.open_round(2)
    # Assert
    assert all(first[p].directory is not None for p in ids)
    assert [p for p in ids if second[p].directory is not None] == [3]
    masked = parties[3].mask(second[3].request, vectors[3], codec, second[3].directory)
    assert masked.round_id == 2


def test_round_ids_must_increase_and_rounds_mask_once():
    # Prepare
    ids = [0, 1]
    server, parties = setup_inprocess(ids)
    codec = FixedPointCodec(bits=32, value_range=1.0, num_summands=2)
    start = server.open_round(5)[0]
    parties[0].mask(start.request, np.zeros(3), codec, start.directory)
    # Execute / Assert
    with pytest.raises(ProtocolError, match="round ids must increase"):
        parties[0].mask(start.request, np.zeros(3), codec)
    with pytest.raises(ProtocolError, match="must strictly increase"):
        server.open_round(5)


def test_party_state_survives_a_restart_between_messages():
    # Prepare
    ids = [0, 1, 2]
    server, parties = setup_inprocess(ids)
    codec = FixedPointCodec(bits=64, value_range=1.0, num_summands=3)
    vectors = _vectors(ids)

    def restarted():
        return {p: SecAggParty.from_state(q.to_state()) for p, q in parties.items()}

    # Execute: every party is rebuilt from its flat state before each message
    for round_id in (1, 2):
        parties = restarted()
        starts = server.open_round(round_id)
        inputs = [
            parties[p].mask(s.request, vectors[p], codec, s.directory)
            for p, s in starts.items()
        ]
        requests = server.route_masked_inputs(inputs)
        parties = restarted()
        result = server.unmask([parties[p].unmask(r) for p, r in requests.items()])
    # Assert
    np.testing.assert_allclose(result.values, _plain_sum(vectors, ids), atol=1e-12)
    assert parties[0].to_state()["pending_round"] == -1


def test_a_single_party_cannot_aggregate():
    # Execute / Assert
    with pytest.raises(ProtocolError, match="at least 2 parties"):
        setup_inprocess([0])


def test_altered_revealed_share_is_detected_by_the_server():
    # Prepare: 4 parties, 3 neighbours, threshold 2: each seed has one spare share
    ids = [0, 1, 2, 3]
    server, parties = setup_inprocess(ids)
    codec = FixedPointCodec(bits=32, value_range=1.0, num_summands=4)
    _, requests = _masked_round(server, parties, 1, _vectors(ids), codec)
    responses = [parties[p].unmask(r) for p, r in requests.items()]
    honest = responses[3]
    shares = list(honest.self_mask_shares)
    shares[0] = (shares[0] + 1) % shamir.PRIME
    responses[3] = dataclasses.replace(honest, self_mask_shares=tuple(shares))
    # Execute / Assert
    with pytest.raises(RecoveryFailed, match="inconsistent"):
        server.unmask(responses)
