"""The secure-aggregation bench widens the neighbour graph until a sum recovers."""

import pytest

from fedmed.bench import secagg
from fedmed.privacy import RecoveryFailed


def fails_below(least: int, tried: list[int]):
    def measure(clients, dim, fraction, repeats, degree):
        tried.append(degree)
        if degree < least:
            raise RecoveryFailed(f"degree {degree} too thin")
        return {"providers": clients, "degree": degree}

    return measure


def test_the_graph_widens_until_recovery_holds(monkeypatch):
    # Prepare: 100 parties (default degree 20) whose sum recovers from 40 up
    tried: list[int] = []
    monkeypatch.setattr(secagg, "measure", fails_below(40, tried))
    # Execute
    row = secagg.measure_or_widen(100, 64, 0.2, 1)
    # Assert: 20 -> 30 -> 44, each even, the row naming the one that held
    assert tried == [20, 30, 44]
    assert (row["degree"], row["default_degree_recovered"]) == (44, 0)


def test_the_default_degree_is_named_when_it_holds(monkeypatch):
    tried: list[int] = []
    monkeypatch.setattr(secagg, "measure", fails_below(0, tried))
    row = secagg.measure_or_widen(100, 64, 0.2, 1)
    assert tried == [20] and row["default_degree_recovered"] == 1


def test_a_complete_graph_that_cannot_recover_is_an_error(monkeypatch):
    tried: list[int] = []
    monkeypatch.setattr(secagg, "measure", fails_below(10**6, tried))
    with pytest.raises(RecoveryFailed):
        secagg.measure_or_widen(100, 64, 0.2, 1)
    assert tried[-1] == 99 and tried == sorted(set(tried))
