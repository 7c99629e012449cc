"""The busy neighbour really keeps cores busy, and stops with its block."""

from __future__ import annotations

import os
import time

from benchmarks.neighbour import NEIGHBOUR_NICE, busy_neighbour


def test_the_busy_neighbour_keeps_cores_busy_until_it_is_done():
    before = os.times()
    with busy_neighbour(2) as nice:
        assert nice in (NEIGHBOUR_NICE, 0)
        time.sleep(1.0)
    # the spinners were waited for on the way out, so their CPU time is now this process's children's
    assert os.times().children_user - before.children_user > 0.5
