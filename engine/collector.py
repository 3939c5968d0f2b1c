"""The garbage collector's policy while a run moves millions of short-lived objects.

An import makes few reference cycles but many container objects (answers, batches, the
results), so CPython's default thresholds run a young collection every ~700 net
allocations and, as survivors pile up, full collections that walk every object the
process holds (polars, aiohttp and the engine's own modules: ~130k objects). Measured on
500k rows (`hsbulk bench`): ~1,150 collections taking ~1 s of a ~6 s run, which found ~3,000
objects in all; with this policy, none during the import.
`tuned_collector` freezes what exists when the run starts (it is never collected, so full
collections walk only the run's own objects) and raises the young threshold; both are
restored on the way out.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

YOUNG_THRESHOLD = 50_000
_runs = 0  # runs inside the block now (several may share one process and event loop)
_saved: tuple[tuple[int, ...], bool] = ((), False)


@contextmanager
def tuned_collector(young: int = YOUNG_THRESHOLD) -> Iterator[None]:
    """Inside: objects older than the block are frozen, young collections are rarer.

    Runs overlapping in one process share one policy: the first in sets it, the last out
    restores what was there before the first.
    """
    global _runs, _saved
    if not _runs:
        thresholds = gc.get_threshold()
        _saved = (thresholds, gc.get_freeze_count() > 0)  # someone else's freeze: kept
        gc.freeze()
        gc.set_threshold(max(young, thresholds[0]), *thresholds[1:])
    _runs += 1
    try:
        yield
    finally:
        _runs -= 1
        if not _runs:
            saved, frozen_before = _saved
            gc.set_threshold(*saved)
            if not frozen_before:
                gc.unfreeze()
