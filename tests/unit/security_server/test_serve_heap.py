"""``ruta ss serve`` settles its heap once started: what start-up made is frozen out of the
cyclic collector's sight and the youngest generation is collected in larger batches."""

from __future__ import annotations

import gc

from security_server.serve_cli import GC_YOUNG_THRESHOLD, _settle_heap


def test_settling_freezes_start_up_and_raises_the_young_threshold() -> None:
    threshold = gc.get_threshold()
    try:
        _settle_heap()
        assert gc.get_freeze_count() > 0
        assert gc.get_threshold() == (GC_YOUNG_THRESHOLD, *threshold[1:])
        # Cycles made afterwards are still collected.
        cycle: list[object] = []
        cycle.append(cycle)
        del cycle
        assert gc.collect() >= 1
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)
