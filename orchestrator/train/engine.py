"""DeepSpeed inside a Ray Train worker: config, initialize, whole-model views of sharded engines.

Ray Train has already created the process group (gloo on CPU, NCCL on GPU) when the train loop
runs; `deepspeed.initialize` finds it and reuses it. DeepSpeed is imported inside functions:
only Train workers need it, and the driver process stays free of its import cost.

Precision: `fp32` trains in fp32. `bf16` is DeepSpeed's `torch_autocast` (fp32 parameters and
optimizer state, bf16 matmuls/convs), the same recipe as the reference's accelerate bf16; the
weights the EMA and the export read are therefore fp32 at every ZeRO stage. fp16 is not offered
(DeepSpeed refuses it on CPU, and the paper trains bf16).

Gradient reduction: `grad_reduce_dtype` (fp32 by default, as the reference's DDP all-reduces
fp32 gradients). DeepSpeed's autocast mode otherwise marks every Linear/Conv parameter to be
reduced, and under ZeRO-3 all-gathered, in the autocast dtype.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn

# Parameters gathered at once when a whole-model view of a ZeRO-3 engine is needed (EMA,
# export): bounds the transient memory to this many elements plus one parameter.
GATHER_CHUNK_ELEMENTS = 50_000_000
# DeepSpeed's name for its CPU shared-memory all-reduce op (`ShareMemCommBuilder.NAME`).
SHM_ALL_REDUCE_OP = "deepspeed_shm_comm"


def resolve_precision(precision: str, on_gpu: bool) -> str:
    """`auto` is bf16 on GPU and fp32 on CPU; explicit values pass through."""
    if precision == "auto":
        return "bf16" if on_gpu else "fp32"
    if precision not in ("fp32", "bf16"):
        raise ValueError(f"precision must be auto, fp32 or bf16, got {precision!r}")
    return precision


@dataclass(frozen=True)
class EngineSpec:
    """Everything `deepspeed_config` needs; built from `TrainingConfig` and the world size."""

    micro_batch: int
    gradient_accumulation_steps: int
    world_size: int
    zero_stage: int
    precision: str  # resolved: fp32 | bf16
    grad_reduce_dtype: str  # fp32 | bf16
    grad_clip: float | None
    offload_optimizer: bool
    # ZeRO-3: gather the whole model per forward/backward (see ModelBundle.zero3_leaf).
    zero3_leaf: bool = False


def deepspeed_config(spec: EngineSpec) -> dict:
    """The DeepSpeed config dict for one engine."""
    zero: dict = {"stage": spec.zero_stage}
    if spec.offload_optimizer:
        # Inside zero_optimization (the Ray tutorial's top-level placement is ignored).
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": torch.cuda.is_available()}
    config = {
        "train_micro_batch_size_per_gpu": spec.micro_batch,
        "gradient_accumulation_steps": spec.gradient_accumulation_steps,
        "train_batch_size": spec.micro_batch * spec.gradient_accumulation_steps * spec.world_size,
        "gradient_clipping": spec.grad_clip or 0.0,
        "zero_optimization": zero,
        # The client optimizers are torch Adam/AdamW subclasses that only add a skippable step
        # (guard.py); DeepSpeed's ZeRO allow-list compares exact types.
        "zero_allow_untested_optimizer": True,
        "steps_per_print": 2**31 - 1,
        "wall_clock_breakdown": False,
    }
    # Every reduction path reads this: the engine's all-reduce (ZeRO-0) and ZeRO-1/2/3's
    # reduce(-scatter) of parameters that autocast does not mark.
    config["communication_data_type"] = spec.grad_reduce_dtype
    if spec.precision == "bf16":
        config["torch_autocast"] = {"enabled": True, "dtype": "bfloat16"}
        if spec.grad_reduce_dtype == "fp32":
            # The modules whose parameters DeepSpeed communicates in bf16 (its default: Linear
            # and Conv): none, so every gradient is reduced in fp32.
            config["torch_autocast"]["lower_precision_safe_modules"] = []
    return config


def initialize(
    model: nn.Module, optimizer: torch.optim.Optimizer, spec: EngineSpec, compile_model: bool
):
    """Wrap `model` + client `optimizer` in a DeepSpeed engine; optionally `torch.compile` it."""
    # An op DeepSpeed JIT-builds on first use goes beside the hub weights under TORCH_HOME, the
    # one documented torch cache, instead of torch's separate ~/.cache/torch_extensions.
    torch_home = os.environ.get("TORCH_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "torch"
    )
    os.environ.setdefault("TORCH_EXTENSIONS_DIR", os.path.join(torch_home, "torch_extensions"))
    import deepspeed
    import deepspeed.ops

    # On the CPU, DeepSpeed's communication backend compiles a shared-memory all-reduce (C++:
    # 30 s and a CPU-minute on 2 cores, a compiler on every machine, rebuilt whenever another
    # environment built it last) that only its tensor-parallel inference kernels call; training
    # reduces through torch.distributed. It builds the op only where its compatibility table
    # (`deepspeed.ops.__compatible_ops__`, read for nothing else) says it can: say it cannot.
    deepspeed.ops.__compatible_ops__[SHM_ALL_REDUCE_OP] = False

    if spec.zero_stage == 3 and spec.zero3_leaf:
        deepspeed.utils.set_z3_leaf_module(model, True)
    engine, _, _, _ = deepspeed.initialize(
        model=model, optimizer=optimizer, config=deepspeed_config(spec)
    )
    if spec.world_size == 1 and spec.zero_stage == 0:
        # One worker has nothing to average: skip DeepSpeed's flatten / all-reduce / unflatten
        # of every gradient at each boundary (a pure copy here, ~5 % of a small CPU step).
        engine.enable_backward_allreduce = False
    if compile_model:
        # Applied from outside: the model files never carry @torch.compile (the reference does).
        engine.compile()
    return engine


def client_optimizer(engine) -> torch.optim.Optimizer:
    """The torch optimizer DeepSpeed steps (ZeRO and bf16 wrappers keep it as `.optimizer`)."""
    optimizer = engine.optimizer
    while not isinstance(optimizer, torch.optim.Optimizer) and hasattr(optimizer, "optimizer"):
        optimizer = optimizer.optimizer
    return optimizer


def _gathered(params: list[nn.Parameter], zero_stage: int):
    import deepspeed

    return deepspeed.zero.GatheredParameters(params, modifier_rank=None, enabled=zero_stage == 3)


def gathered_named_parameters(
    module: nn.Module, zero_stage: int
) -> Iterator[tuple[str, torch.Tensor]]:
    """(name, full parameter) pairs of a possibly ZeRO-3-partitioned module, on every rank.

    Collective under ZeRO-3: every rank must consume the iterator. Each yielded tensor is only
    valid until the next item is requested (its chunk is re-partitioned then).
    """
    named = list(module.named_parameters())
    start = 0
    while start < len(named):
        end, elements = start, 0
        while end < len(named) and (end == start or elements < GATHER_CHUNK_ELEMENTS):
            elements += _full_numel(named[end][1])
            end += 1
        chunk = named[start:end]
        with _gathered([p for _, p in chunk], zero_stage):
            yield from chunk
        start = end


def _full_numel(param: nn.Parameter) -> int:
    # Partitioned ZeRO-3 parameters report 0 elements; ds_numel is the full size.
    return getattr(param, "ds_numel", param.numel())


def full_state_dict(module: nn.Module, zero_stage: int, keep: bool) -> dict[str, torch.Tensor]:
    """The module's whole state dict as CPU tensors; collective under ZeRO-3.

    Ranks with `keep=False` take part in the gathers but return an empty dict.
    """
    state: dict[str, torch.Tensor] = {}
    for name, tensor in gathered_named_parameters(module, zero_stage):
        if keep:
            state[name] = tensor.detach().to("cpu", copy=True)
    if not keep:
        return {}
    for name, buffer in module.named_buffers():
        state[name] = buffer.detach().to("cpu", copy=True)
    # Order as the module's own state dict (persistent buffers only).
    return {key: state[key] for key in module.state_dict()}


def local_weights_finite(module: nn.Module, zero_stage: int) -> bool:
    """Whether this rank's share of the weights is finite (no communication)."""
    if zero_stage == 3:
        from deepspeed.utils import safe_get_local_fp32_param

        tensors = [safe_get_local_fp32_param(p) for p in module.parameters()]
    else:
        tensors = list(module.parameters())
    return all(bool(t.isfinite().all()) for t in tensors if t is not None and t.numel())


def state_bytes(engine) -> dict[str, int]:
    """Bytes this rank holds for parameters and for optimizer state (masters + moments)."""
    module_params = list(engine.module.parameters())
    param_bytes = 0
    for p in module_params:
        local = getattr(p, "ds_tensor", None)
        tensor = local if local is not None else p
        param_bytes += tensor.numel() * tensor.element_size()
    optimizer = client_optimizer(engine)
    own = {id(p) for p in module_params}
    # Under ZeRO the client optimizer steps flat fp32 partitions (the masters), not the module's
    # parameters; they are the keys of its state (ZeRO-3 detaches them from param_groups
    # between steps). Counted as optimizer state, as ZeRO's memory model does.
    master_bytes = sum(p.numel() * p.element_size() for p in optimizer.state if id(p) not in own)
    moment_bytes = sum(
        value.numel() * value.element_size()
        for state in optimizer.state.values()
        for value in state.values()
        if torch.is_tensor(value)
    )
    return {"params": param_bytes, "optimizer": master_bytes + moment_bytes}
