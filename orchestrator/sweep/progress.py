"""A compact live view of a sweep instead of Ray's raw log flood.

Trials (and rank 0 of their Train runs) post `(point, stage, step, total)` to a named actor, the
`ProgressBoard`; the driver renders one short block whenever something changed: trials done /
running / failed, each running trial's stage and step, elapsed time and an ETA. Posting is a
fire-and-forget no-op when no board exists (tests, notebooks, a stage run on its own).
"""

from __future__ import annotations

import sys
import threading
import time
from dataclasses import dataclass, field

import ray

BOARD_NAME = "ldm-frontier-progress"
BOARD_NAMESPACE = "ldm-frontier"


@ray.remote(num_cpus=0)
class ProgressBoard:
    def __init__(self, total_points: int):
        self.total = total_points
        self.entries: dict[str, dict] = {}
        self.version = 0

    def post(self, point: str, **entry) -> None:
        self.entries[point] = merge_entry(self.entries.get(point, {}), entry, time.time())
        self.version += 1

    def snapshot(self) -> tuple[int, int, dict[str, dict]]:
        return self.version, self.total, dict(self.entries)


def merge_entry(previous: dict, entry: dict, now: float) -> dict:
    """A point's new board entry. The first step seen of a stage anchors its speed, so the
    view can give an ETA from the next measured step on (not only once a point is done)."""
    merged = {**previous, **entry, "time": now}
    if merged.get("step") is not None and (
        previous.get("stage") != merged.get("stage") or previous.get("step") is None
    ):
        merged.update(first_step=merged["step"], first_time=now)
    return merged


def create_board(total_points: int):
    from orchestrator.sweep.resources import on_driver_node

    return ProgressBoard.options(
        name=BOARD_NAME,
        namespace=BOARD_NAMESPACE,
        get_if_exists=True,
        scheduling_strategy=on_driver_node(),
    ).remote(total_points)


def post(point: str, **entry) -> None:
    """Best effort: progress must never fail a run."""
    try:
        board = ray.get_actor(BOARD_NAME, namespace=BOARD_NAMESPACE)
    except (ValueError, RuntimeError):
        return
    board.post.remote(point, **entry)


def format_view(total: int, entries: dict[str, dict], started: float, now: float) -> str:
    states = [e.get("state", "pending") for e in entries.values()]
    done = states.count("done")
    failed = states.count("failed")
    running = [(p, e) for p, e in sorted(entries.items()) if e.get("state") == "running"]
    elapsed = now - started
    eta = ""
    if 0 < done < total:
        eta = f", ETA ~{_duration(elapsed / done * (total - done - failed))}"
    lines = [
        f"[frontier {_duration(elapsed)}] {done}/{total} done, {len(running)} running, "
        f"{failed} failed{eta}"
    ]
    for point, entry in running:
        step = entry.get("step")
        steps = (
            f" step {step}/{entry.get('total')}" if step is not None and entry.get("total") else ""
        )
        lines.append(f"  {point}: {entry.get('stage', '?')}{steps}{stage_eta(entry)}")
    return "\n".join(lines)


def stage_eta(entry: dict) -> str:
    """` (~Ns left)` for a stage whose speed has been measured over at least one step."""
    step, total, first = entry.get("step"), entry.get("total"), entry.get("first_step")
    if step is None or not total or first is None or step <= first:
        return ""
    per_step = (entry["time"] - entry["first_time"]) / (step - first)
    return f" (~{_duration(per_step * (total - step))} left)"


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


@dataclass
class LiveView:
    """Polls the board from a daemon thread and prints the view: at once when a trial changes
    state or stage, at most every `step_interval` seconds for step progress alone."""

    board: object
    interval: float = 5.0
    step_interval: float = 30.0
    stream: object = sys.stdout
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> LiveView:
        self.started = time.time()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.interval + 5)

    def _run(self) -> None:
        last_shape, last_print = None, 0.0
        while not self._stop.wait(self.interval):
            try:
                _, total, entries = ray.get(self.board.snapshot.remote(), timeout=10)
            except Exception:  # noqa: BLE001 - the view is cosmetic; a hiccup must not kill it
                continue
            shape = sorted((p, e.get("state"), e.get("stage")) for p, e in entries.items())
            now = time.time()
            if shape != last_shape or now - last_print >= self.step_interval:
                print(format_view(total, entries, self.started, now), file=self.stream, flush=True)
                last_shape, last_print = shape, now
