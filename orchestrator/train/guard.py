"""The non-finite guard: a NaN/Inf loss or gradient never reaches the weights.

Every rank records which of its loss terms were non-finite during an optimizer step; one
all-reduce (MAX) at the accumulation boundary makes every rank agree before the update. Policy
`stop` raises `NonFiniteError` naming the step and the terms; policy `skip` runs the engine step
with the client optimizer's update switched off (so DeepSpeed's counters and gradient buffers
advance and clear exactly as on a normal step) and counts it.

Gradients: with ZeRO 0 every rank holds the full all-reduced gradient after the boundary
backward, so it is checked directly. With ZeRO 1-3 each rank holds only a partition, and
DeepSpeed itself refuses the update when the global gradient norm is not finite (fp32 masters
and torch-autocast bf16 both take that path) and counts it in `engine.skipped_steps`; the guard
reads that counter, so both mechanisms end in the same policy.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.distributed as dist
from torch.nn.utils import get_total_norm

POLICIES = ("skip", "stop")


class SkippableStepMixin:
    """A torch optimizer whose `step()` is a no-op while `skip_updates` is set.

    DeepSpeed calls the client optimizer's `step()` once per parameter group (ZeRO 1/2) or
    sub-group (ZeRO 3) inside `engine.step()`; leaving all of them out leaves parameters and
    Adam moments untouched, which is what skipping a step means.
    """

    skip_updates = False

    def step(self, closure=None):
        if self.skip_updates:
            return None
        return super().step(closure)


class SkippableAdam(SkippableStepMixin, torch.optim.Adam):
    """`torch.optim.Adam` (the tokenizer's optimizer) with a skippable step."""


class SkippableAdamW(SkippableStepMixin, torch.optim.AdamW):
    """`torch.optim.AdamW` (the DiT's optimizer) with a skippable step."""


@contextmanager
def updates_skipped(optimizer: SkippableStepMixin) -> Iterator[None]:
    optimizer.skip_updates = True
    try:
        yield
    finally:
        optimizer.skip_updates = False


class NonFiniteError(FloatingPointError):
    """Raised under policy `stop`; the message names the step and the offending terms."""

    def __init__(self, step: int, terms: list[str], gradient: bool):
        self.step = step
        self.terms = terms
        self.gradient = gradient
        what = []
        if terms:
            what.append(f"loss terms {', '.join(terms)}")
        if gradient:
            what.append("the gradient")
        super().__init__(
            f"non-finite {' and '.join(what)} at step {step}; no update was applied and no "
            "checkpoint was written (training.nonfinite: stop). Lower the learning rate, enable "
            "training.grad_clip or generator.model.use_qknorm, or set training.nonfinite: skip"
        )

    def __reduce__(self):
        # Crosses the process boundary (worker -> driver) by pickling.
        return (self.__class__, (self.step, self.terms, self.gradient))


class NonFiniteGuard:
    """Per optimizer step: `begin()`, `observe(terms)` per micro-batch, then `step(engine, s)`."""

    def __init__(self, policy: str, zero_stage: int, optimizer: SkippableStepMixin):
        if policy not in POLICIES:
            raise ValueError(f"nonfinite policy must be one of {POLICIES}, got {policy!r}")
        self.policy = policy
        self.zero_stage = zero_stage
        self.optimizer = optimizer
        self.skipped_steps = 0
        self._bad_terms: set[str] = set()

    def begin(self) -> None:
        self._bad_terms = set()

    def observe(self, terms: dict[str, torch.Tensor]) -> None:
        """Record the names of this micro-batch's non-finite scalar terms (local to the rank)."""
        names = list(terms)
        finite = torch.stack([terms[n].detach().float().reshape(()) for n in names]).isfinite()
        if not bool(finite.all()):
            self._bad_terms.update(n for n, ok in zip(names, finite.tolist()) if not ok)

    def step(self, engine, step: int) -> bool:
        """Run `engine.step()` under the policy; True when the weights were updated."""
        local = torch.tensor(
            [float(bool(self._bad_terms)), float(self._local_gradient_nonfinite(engine))],
            device=engine.device,
        )
        if dist.get_world_size() > 1:
            dist.all_reduce(local, op=dist.ReduceOp.MAX)
        loss_bad, gradient_bad = (bool(v) for v in local.tolist())
        if loss_bad or gradient_bad:
            terms = self._terms_of_all_ranks() if loss_bad else []
            if self.policy == "stop":
                raise NonFiniteError(step, terms, gradient_bad)
            with updates_skipped(self.optimizer):
                engine.step()
            self.skipped_steps += 1
            return False
        skipped_before = engine.skipped_steps
        engine.step()
        if engine.skipped_steps > skipped_before:
            # ZeRO 1-3 found a non-finite global gradient norm and left the weights alone.
            if self.policy == "stop":
                raise NonFiniteError(step, [], gradient=True)
            self.skipped_steps += 1
            return False
        return True

    def _local_gradient_nonfinite(self, engine) -> bool:
        if self.zero_stage != 0:
            return False
        grads = [p.grad for p in engine.module.parameters() if p.grad is not None]
        # One fused norm over all gradients: NaN/Inf anywhere makes it non-finite.
        return bool(grads) and not bool(get_total_norm(grads).isfinite())

    def _terms_of_all_ranks(self) -> list[str]:
        gathered: list[set[str] | None] = [None] * dist.get_world_size()
        dist.all_gather_object(gathered, self._bad_terms)
        return sorted(set().union(*gathered))
