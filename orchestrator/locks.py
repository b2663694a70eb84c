"""Stage locks: two trials that share a stage (same tokenizer key, say) never run it twice.

The first trial to ask gets the lock and runs the stage; the others wait, then find its DONE
marker and reuse the output. The lock table is a named actor living as long as the sweep's
driver, so a crashed holder's locks die with its Ray job instead of blocking a rerun.
"""

from __future__ import annotations

import contextlib
import time
import uuid

import ray

LOCKS_NAME = "ldm-frontier-locks"
LOCKS_NAMESPACE = "ldm-frontier"


@ray.remote(num_cpus=0)
class LockTable:
    def __init__(self):
        self.owners: dict[str, str] = {}

    def acquire(self, key: str, owner: str) -> bool:
        if self.owners.get(key, owner) != owner:
            return False
        self.owners[key] = owner
        return True

    def release(self, key: str, owner: str) -> None:
        if self.owners.get(key) == owner:
            del self.owners[key]


def create_lock_table():
    return LockTable.options(
        name=LOCKS_NAME, namespace=LOCKS_NAMESPACE, get_if_exists=True
    ).remote()


@contextlib.contextmanager
def stage_lock(key: str, poll_seconds: float = 2.0):
    """Hold `key` for the duration; a no-op outside a sweep (no lock table)."""
    try:
        table = ray.get_actor(LOCKS_NAME, namespace=LOCKS_NAMESPACE)
    except (ValueError, RuntimeError):
        yield
        return
    owner = uuid.uuid4().hex
    while not ray.get(table.acquire.remote(key, owner)):
        time.sleep(poll_seconds)
    try:
        yield
    finally:
        ray.get(table.release.remote(key, owner))
