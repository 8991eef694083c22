"""Transition alias of :mod:`fedmed.wire.records` (import from ``fedmed.wire``).

Kept only while ``benchmarks/selora.py`` still imports ``state_to_record``
from here; remove it once that script imports from :mod:`fedmed.wire`.
"""

from fedmed.wire.records import state_to_record

__all__ = ["state_to_record"]
