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
    SecAggServer,
    ShareTampered,
    ValueOutOfRange,
    secure_sum_inprocess,
    setup_inprocess,
    shamir,
)
from fedmed.privacy.messages import (
    MaskRequest,
    SetupSharesDelivery,
    UnmaskRequest,
)

DIM = 257


def _vectors(parties, seed=0, scale=1.0):
    rng = np.random.default_rng(seed)
    return {p: rng.uniform(-scale, scale, size=DIM) for p in parties}


def _plain_sum(vectors, members):
    return np.sum([vectors[p] for p in members], axis=0)


def test_masked_inputs_hide_values_and_sum_is_exact():
    # Prepare
    ids = [3, 8, 11, 2**63 + 5]  # Flower node ids are unsigned 64-bit
    server, parties = setup_inprocess(ids, through_bytes=True)
    codec = FixedPointCodec(bits=32, value_range=1.0, num_summands=len(ids))
    vectors = _vectors(ids)
    request = server.mask_request(1)
    # Execute
    inputs = [parties[p].mask(request, vectors[p], codec) for p in ids]
    requests = server.route_masked_inputs(inputs)
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
    # Prepare: 7 parties, threshold 5 -> 2 may drop after the key setup
    ids = list(range(7))
    server, parties = setup_inprocess(ids, threshold=5)
    codec = FixedPointCodec(bits=64, value_range=10.0, num_summands=7)
    vectors = _vectors(ids, scale=10.0)
    # Execute
    result = secure_sum_inprocess(
        server, parties, 1, vectors, codec, drop_before_masking=[2, 5]
    )
    # Assert
    survivors = [0, 1, 3, 4, 6]
    assert result.contributors == tuple(survivors)
    assert result.dropped == (2, 5)
    np.testing.assert_allclose(result.values, _plain_sum(vectors, survivors), atol=1e-9)


def test_one_dropout_too_many_fails_the_round_clearly():
    # Prepare
    ids = list(range(7))
    server, parties = setup_inprocess(ids, threshold=5)
    codec = FixedPointCodec(bits=32, value_range=1.0, num_summands=7)
    # Execute / Assert
    with pytest.raises(RecoveryFailed, match="4 masked inputs arrived, at least 5"):
        secure_sum_inprocess(
            server, parties, 1, _vectors(ids), codec, drop_before_masking=[0, 1, 2]
        )


def test_dropouts_during_unmasking_keep_their_input():
    # Prepare
    ids = list(range(6))
    server, parties = setup_inprocess(ids, threshold=4)
    codec = FixedPointCodec(bits=32, value_range=1.0, num_summands=6)
    vectors = _vectors(ids)
    # Execute
    result = secure_sum_inprocess(
        server, parties, 1, vectors, codec, drop_before_unmasking=[1, 4]
    )
    # Assert
    np.testing.assert_allclose(result.values, _plain_sum(vectors, ids), atol=1e-7)
    with pytest.raises(RecoveryFailed, match="3 parties answered"):
        secure_sum_inprocess(
            server, parties, 2, vectors, codec, drop_before_unmasking=[0, 1, 2]
        )


def test_tampered_setup_share_is_rejected():
    # Prepare
    ids = [0, 1, 2]
    parties = {p: SecAggParty(p) for p in ids}
    server = SecAggServer()
    directory = server.receive_advertisements([p.advertise() for p in parties.values()])
    bundles = [p.receive_directory(directory) for p in parties.values()]
    deliveries = server.route_setup_shares(bundles)
    delivery = deliveries[1]
    blob = bytearray(delivery.ciphertexts[0])
    blob[20] ^= 0x01
    tampered = dataclasses.replace(
        delivery, ciphertexts=(bytes(blob), *delivery.ciphertexts[1:])
    )
    # Execute / Assert
    with pytest.raises(ShareTampered, match="from party 0 .* failed authentication"):
        parties[1].receive_setup_shares(tampered)


def test_misrouted_round_share_is_rejected():
    # Prepare
    ids = [0, 1, 2, 3]
    server, parties = setup_inprocess(ids)
    codec = FixedPointCodec(bits=32, value_range=1.0, num_summands=4)
    vectors = _vectors(ids)
    request = server.mask_request(1)
    inputs = [parties[p].mask(request, vectors[p], codec) for p in ids]
    requests = server.route_masked_inputs(inputs)
    original = requests[2]
    swapped = UnmaskRequest(
        original.round_id,
        original.survivors,
        original.dropped,
        original.senders,
        (original.ciphertexts[1], original.ciphertexts[0], *original.ciphertexts[2:]),
    )
    # Execute / Assert
    with pytest.raises(ShareTampered):
        parties[2].unmask(swapped)


def test_share_replayed_from_an_earlier_round_is_rejected():
    # Prepare: the same pair key encrypts every round's shares; the AEAD binds the round
    ids = [0, 1, 2]
    server, parties = setup_inprocess(ids)
    codec = FixedPointCodec(bits=32, value_range=1.0, num_summands=3)
    vectors = _vectors(ids)
    rounds = {}
    for round_id in (1, 2):
        request = server.mask_request(round_id)
        inputs = [parties[p].mask(request, vectors[p], codec) for p in ids]
        rounds[round_id] = server.route_masked_inputs(inputs)[2]
    replayed = dataclasses.replace(rounds[2], ciphertexts=rounds[1].ciphertexts)
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


def test_dropped_party_is_excluded_for_the_rest_of_the_run():
    # Prepare
    ids = list(range(5))
    server, parties = setup_inprocess(ids, threshold=3)
    codec = FixedPointCodec(bits=32, value_range=1.0, num_summands=5)
    vectors = _vectors(ids)
    secure_sum_inprocess(server, parties, 1, vectors, codec, drop_before_masking=[4])
    # Execute
    result = secure_sum_inprocess(server, parties, 2, vectors, codec)
    # Assert
    assert result.contributors == (0, 1, 2, 3)
    np.testing.assert_allclose(
        result.values, _plain_sum(vectors, [0, 1, 2, 3]), atol=1e-7
    )
    with pytest.raises(ProtocolError, match="excluded from round 3"):
        parties[4].mask(MaskRequest(3, (0, 1, 2, 3)), vectors[4], codec)
    with pytest.raises(ProtocolError, match=r"lists excluded parties \[4\]"):
        parties[0].mask(MaskRequest(3, (0, 1, 2, 3, 4)), vectors[0], codec)


def test_party_refuses_to_reveal_key_shares_of_a_survivor():
    # Prepare: a server that lists a party both as having sent and as dropped
    ids = [0, 1, 2, 3]
    server, parties = setup_inprocess(ids, threshold=2)
    codec = FixedPointCodec(bits=32, value_range=1.0, num_summands=4)
    request = server.mask_request(1)
    for p in ids:
        parties[p].mask(request, _vectors(ids)[p], codec)
    greedy = UnmaskRequest(1, (0, 1, 2), (2, 3), (), ())
    # Execute / Assert
    with pytest.raises(ProtocolError, match="must split the round's active parties"):
        parties[0].unmask(greedy)


def test_round_ids_must_increase_and_rounds_mask_once():
    # Prepare
    ids = [0, 1]
    server, parties = setup_inprocess(ids)
    codec = FixedPointCodec(bits=32, value_range=1.0, num_summands=2)
    request = server.mask_request(5)
    parties[0].mask(request, np.zeros(3), codec)
    # Execute / Assert
    with pytest.raises(ProtocolError, match="round ids must increase"):
        parties[0].mask(request, np.zeros(3), codec)
    with pytest.raises(ProtocolError, match="must strictly increase"):
        server.mask_request(5)


def test_party_state_survives_a_restart_between_messages():
    # Prepare
    ids = [0, 1, 2]
    server, parties = setup_inprocess(ids)
    codec = FixedPointCodec(bits=64, value_range=1.0, num_summands=3)
    vectors = _vectors(ids)
    # Execute: every party is rebuilt from its flat state before each round
    for round_id in (1, 2):
        parties = {p: SecAggParty.from_state(q.to_state()) for p, q in parties.items()}
        result = secure_sum_inprocess(
            server, parties, round_id, vectors, codec, through_bytes=True
        )
    # Assert
    np.testing.assert_allclose(result.values, _plain_sum(vectors, ids), atol=1e-12)


def test_a_single_party_cannot_aggregate():
    # Execute / Assert
    with pytest.raises(ProtocolError, match="at least 2 parties"):
        setup_inprocess([0])


def test_delivery_for_the_wrong_party_is_refused():
    # Prepare
    ids = [0, 1, 2]
    parties = {p: SecAggParty(p) for p in ids}
    server = SecAggServer()
    directory = server.receive_advertisements([p.advertise() for p in parties.values()])
    deliveries = server.route_setup_shares(
        [p.receive_directory(directory) for p in parties.values()]
    )
    wrong: SetupSharesDelivery = deliveries[2]
    # Execute / Assert
    with pytest.raises(ProtocolError, match="addressed to party 2"):
        parties[1].receive_setup_shares(wrong)


def test_altered_revealed_share_is_detected_by_the_server():
    # Prepare
    ids = [0, 1, 2, 3]
    server, parties = setup_inprocess(ids, threshold=2)
    codec = FixedPointCodec(bits=32, value_range=1.0, num_summands=4)
    request = server.mask_request(1)
    inputs = [parties[p].mask(request, _vectors(ids)[p], codec) for p in ids]
    responses = [
        parties[p].unmask(r) for p, r in server.route_masked_inputs(inputs).items()
    ]
    honest = responses[3]
    shares = list(honest.self_mask_shares)
    shares[0] = (shares[0] + 1) % shamir.PRIME
    responses[3] = dataclasses.replace(honest, self_mask_shares=tuple(shares))
    # Execute / Assert
    with pytest.raises(RecoveryFailed, match="inconsistent"):
        server.unmask(responses)
