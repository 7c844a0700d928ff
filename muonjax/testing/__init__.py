"""Test helpers that are not on the optimizer's import path (HLO audit: :mod:`muonjax.testing.hlo`)."""

from __future__ import annotations

from muonjax.testing.hlo import (
    COLLECTIVES,
    collectives_in_while_loops,
    count_collectives,
    while_loops,
)

__all__ = ["COLLECTIVES", "collectives_in_while_loops", "count_collectives", "while_loops"]
