"""Stage locks: two trials that share a stage (same tokenizer key, say) never run it twice.

The first trial to ask gets the lock and runs the stage; the others wait, then find its DONE
marker and reuse the output. The lock table is a named actor living as long as the sweep's
driver. A lock is a lease its holder renews from a background thread: a holder that dies
without releasing (a killed trial actor, a trial ASHA stopped) stops renewing, and its lease
runs out instead of blocking the retry or the next trial forever.
"""

from __future__ import annotations

import contextlib
import threading
import time
import uuid

import ray

LOCKS_NAME = "ldm-frontier-locks"
LOCKS_NAMESPACE = "ldm-frontier"
LEASE_SECONDS = 60.0


@ray.remote(num_cpus=0)
class LockTable:
    def __init__(self, lease_seconds: float = LEASE_SECONDS):
        self.lease_seconds = lease_seconds
        self.leases: dict[str, tuple[str, float]] = {}  # key -> (owner, expiry)

    def acquire(self, key: str, owner: str) -> bool:
        """Take or renew `key` for `owner`; False while another owner's lease runs."""
        now = time.monotonic()
        held = self.leases.get(key)
        if held is not None and held[0] != owner and held[1] > now:
            return False
        self.leases[key] = (owner, now + self.lease_seconds)
        return True

    def release(self, key: str, owner: str) -> None:
        if self.leases.get(key, ("",))[0] == owner:
            del self.leases[key]


def create_lock_table():
    from orchestrator.sweep.resources import on_driver_node

    return LockTable.options(
        name=LOCKS_NAME,
        namespace=LOCKS_NAMESPACE,
        get_if_exists=True,
        scheduling_strategy=on_driver_node(),
    ).remote()


@contextlib.contextmanager
def stage_lock(key: str, poll_seconds: float = 0.5):
    """Hold `key` for the duration; a no-op outside a sweep (no lock table). A waiting trial
    asks every `poll_seconds` (one small actor call): it starts on the stage's output at most
    that long after the holder released it."""
    try:
        table = ray.get_actor(LOCKS_NAME, namespace=LOCKS_NAMESPACE)
    except (ValueError, RuntimeError):
        yield
        return
    owner = uuid.uuid4().hex
    while not ray.get(table.acquire.remote(key, owner)):
        time.sleep(poll_seconds)
    done = threading.Event()

    def renew() -> None:
        while not done.wait(LEASE_SECONDS / 4):
            ray.get(table.acquire.remote(key, owner))

    renewer = threading.Thread(target=renew, name=f"lease-{key}", daemon=True)
    renewer.start()
    try:
        yield
    finally:
        done.set()
        renewer.join()
        ray.get(table.release.remote(key, owner))
