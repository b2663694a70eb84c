"""Stage locks are leases: a holder that dies without releasing blocks others only briefly."""

from __future__ import annotations

import time

import ray

from orchestrator.sweep.locks import LockTable


def test_lease_excludes_others_until_released_or_expired(ray_local):
    table = LockTable.remote(lease_seconds=1.0)
    assert ray.get(table.acquire.remote("tok", "a"))
    assert not ray.get(table.acquire.remote("tok", "b"))
    assert ray.get(table.acquire.remote("other", "b"))  # keys are independent
    ray.get(table.release.remote("tok", "b"))  # not b's to release
    assert not ray.get(table.acquire.remote("tok", "b"))
    ray.get(table.release.remote("tok", "a"))
    assert ray.get(table.acquire.remote("tok", "b"))
    # b "dies" holding it: no renewal, so the lease runs out and a can take over.
    time.sleep(1.2)
    assert ray.get(table.acquire.remote("tok", "a"))
    ray.kill(table)
