"""Heap trimming once idle: runs after the delay, and new work cancels a pending trim."""

from __future__ import annotations

import asyncio

from service import memory


async def test_trim_runs_once_after_the_service_goes_idle():
    trims = []
    trimmer = memory.IdleTrimmer(delay_s=0.05, trim=lambda: trims.append(1))
    trimmer.idle()
    await asyncio.sleep(0.3)
    assert trims == [1]


async def test_new_work_cancels_a_pending_trim():
    trims = []
    trimmer = memory.IdleTrimmer(delay_s=0.1, trim=lambda: trims.append(1))
    trimmer.idle()
    trimmer.busy()
    await asyncio.sleep(0.3)
    assert trims == []
