"""The DeepSpeed engine in one process, on CPU, at micro sizes: bf16 autocast, `torch.compile`,
the gradient-reduction dtype, and the consolidated weights a resume on another layout loads.

The paper's generator trains bf16 with `compile: true`; these tests drive both workloads'
real `build` / `loss` through the real DeepSpeed engine (`engine.initialize`) in one process
(a world-size-1 gloo group), so every path a GPU run takes through our code runs here too.
"""

from __future__ import annotations

import socket
import time
from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.distributed as dist
from conftest import TrainKit
from torch import nn

from orchestrator.config.schema import GeneratorConfig, TrainingConfig
from orchestrator.train.engine import EngineSpec, deepspeed_config, initialize
from orchestrator.train.loop import make_workload
from orchestrator.train.plan import TrainPlan, generator_stages, tokenizer_stages

MICRO = 2


@pytest.fixture(scope="module", autouse=True)
def process_group(monkeypatch_module):
    """One-rank gloo group: what Ray Train creates before the train loop runs."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for key, value in {
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(port),
        "RANK": "0",
        "LOCAL_RANK": "0",
        "WORLD_SIZE": "1",
        "LOCAL_WORLD_SIZE": "1",
    }.items():
        monkeypatch_module.setenv(key, value)
    dist.init_process_group("gloo", rank=0, world_size=1)
    yield
    dist.destroy_process_group()


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


def _spec(precision: str, grad_reduce_dtype: str = "fp32", zero_stage: int = 2) -> EngineSpec:
    return EngineSpec(
        micro_batch=MICRO,
        gradient_accumulation_steps=1,
        world_size=1,
        zero_stage=zero_stage,
        precision=precision,
        grad_reduce_dtype=grad_reduce_dtype,
        grad_clip=None,
        offload_optimizer=False,
    )


def test_default_reduction_is_the_reference_recipe():
    # fp32 master weights (autocast keeps parameters fp32) and fp32 gradient reduction.
    assert TrainingConfig().grad_reduce_dtype == "fp32"
    assert GeneratorConfig().training.grad_reduce_dtype == "fp32"
    config = deepspeed_config(_spec("bf16"))
    assert config["communication_data_type"] == "fp32"
    assert "bf16" not in config and config["torch_autocast"]["dtype"] == "bfloat16"


def test_no_shared_memory_all_reduce_is_built_on_cpu():
    """DeepSpeed's CPU backend would JIT-compile its inference-only shared-memory all-reduce
    (C++, a CPU-minute) when it sets up communication; the engine switches it off."""
    import deepspeed.comm.comm as ds_comm

    model = nn.Linear(4, 2)
    engine = initialize(
        model, torch.optim.AdamW(model.parameters(), lr=1e-3), _spec("fp32"), compile_model=False
    )
    try:
        assert ds_comm.cdb is not None and ds_comm.cdb.shm_comm_op is None
    finally:
        engine.destroy()


@pytest.mark.parametrize("reduce", ["fp32", "bf16"])
def test_grad_reduce_dtype_in_deepspeeds_resolved_config(reduce):
    """What DeepSpeed resolved from our config: the engine's reduction dtype and the dtype it
    communicates each parameter's gradient in (autocast marks Linear/Conv by default)."""
    from deepspeed.runtime.torch_autocast import get_comm_dtype

    model = nn.Sequential(nn.Linear(4, 8), nn.LayerNorm(8), nn.Linear(8, 2))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    engine = initialize(model, optimizer, _spec("bf16", reduce), compile_model=False)
    try:
        expected = {"fp32": torch.float32, "bf16": torch.bfloat16}[reduce]
        assert engine._config.communication_data_type == expected
        assert engine.communication_data_type == expected
        assert engine._config.torch_autocast_enabled
        linear_dtypes = {get_comm_dtype(p) for p in model[0].parameters()}
        assert linear_dtypes == {expected}
        # Norms are never reduced in bf16; parameters stay fp32 masters either way.
        assert {get_comm_dtype(p) for p in model[1].parameters()} == {torch.float32}
        assert {p.dtype for p in model.parameters()} == {torch.float32}
    finally:
        engine.destroy()


def _plan(workload: str, tmp_path, **training) -> TrainPlan:
    from orchestrator.config import to_dict

    cfg = TrainKit.config(tmp_path, zero_stage=2, steps=1, workers=1)
    section = "tokenizer" if workload == "tokenizer" else "generator"
    part = getattr(cfg, section)
    cfg = replace(cfg, **{section: replace(part, training=replace(part.training, **training))})
    stages = (tokenizer_stages if workload == "tokenizer" else generator_stages)(cfg, 4)
    inputs = (
        {"foundation_weights": "random_init"}
        if workload == "tokenizer"
        else {"latent_stats": {"mean": [0.1] * 4, "std": [1.2] * 4}}
    )
    return TrainPlan(
        workload=workload,
        experiment=to_dict(cfg),
        stages=stages,
        micro_batch=MICRO,
        storage_uri=str(tmp_path),
        run_rel=f"{workload}s/x",
        inputs=inputs,
    )


def _batch(plan: TrainPlan) -> dict[str, np.ndarray]:
    cfg = plan.config()
    rng = np.random.default_rng(0)
    labels = np.arange(MICRO) % 10
    if plan.workload == "tokenizer":
        size = cfg.dataset.resolution
        images = rng.uniform(-1, 1, (MICRO, 3, size, size)).astype(np.float32)
        return {"image": images, "label": labels}
    model = cfg.generator.model
    shape = (MICRO, model.in_channels, model.input_size, model.input_size)
    return {
        "mean": rng.normal(size=shape).astype(np.float32),
        "logvar": np.full(shape, -2.0, np.float32),
        "mean_flip": rng.normal(size=shape).astype(np.float32),
        "logvar_flip": np.full(shape, -2.0, np.float32),
        "label": labels,
    }


def _one_step(plan: TrainPlan, precision: str, compile_backend: str | None = None):
    """(loss, dtypes of every Linear/Conv output, whether the weights moved, parameter dtypes)
    of one step; `compile_backend` torch.compiles the engine's module as `initialize` does."""
    torch.manual_seed(0)
    workload = make_workload(plan, torch.device("cpu"), rank=0)
    for generator in workload.generators.values():
        generator.manual_seed(1)
    bundle = workload.build(0, None)
    before = {n: p.detach().clone() for n, p in bundle.model.named_parameters()}
    seen: set[torch.dtype] = set()
    if compile_backend is None:  # a Python side effect in a hook would only break the graph
        for module in bundle.model.modules():
            if isinstance(module, nn.Linear | nn.Conv2d):
                module.register_forward_hook(lambda _m, _i, out: seen.add(out.dtype))
    engine = initialize(bundle.model, bundle.optimizer, _spec(precision), compile_model=False)
    if compile_backend is not None:
        engine.compile(backend=compile_backend)
    try:
        loss, terms = workload.loss(engine, _batch(plan), 0, 0, 0)
        engine.backward(loss)
        engine.step()
        moved = any(
            not torch.equal(before[n], p.detach()) for n, p in engine.module.named_parameters()
        )
        dtypes = {p.dtype for p in engine.module.parameters()}
    finally:
        engine.destroy()
    assert all(torch.isfinite(v).all() for v in terms.values())
    return float(loss.detach()), seen, moved, dtypes


@pytest.mark.parametrize("workload", ["tokenizer", "generator"])
def test_bf16_autocast_step(workload, tmp_path):
    """A bf16 step runs the matmuls/convs in bf16, keeps fp32 masters, and updates them."""
    plan = _plan(workload, tmp_path, precision="bf16")
    loss, seen, moved, dtypes = _one_step(plan, "bf16")
    assert np.isfinite(loss) and moved
    assert torch.bfloat16 in seen
    assert dtypes == {torch.float32}
    fp32_loss, fp32_seen, _, _ = _one_step(plan, "fp32")
    assert fp32_seen == {torch.float32}
    # Same data, same initial weights: bf16 rounding moves the loss, but only a little.
    assert loss == pytest.approx(fp32_loss, rel=0.05)


def test_compiled_generator_step(tmp_path):
    """`compile: true` (the paper's generator default) with bf16: one compiled micro step.

    Backend `aot_eager`: Dynamo traces the model through DeepSpeed's `engine.compile` and
    AOTAutograd traces the backward, which is where model code breaks under compile (graph
    breaks, Python-side RNG, data-dependent control flow). Inductor's code generation is
    torch's own (Triton on GPU, C++ here): the same step under inductor passed once on this
    2-core machine in 343 s, most of it compiling C++ kernels, too slow for the suite;
    `benchmarks/gpu_check.sh` compiles the XL/1 step with inductor on the GPU.
    """
    plan = _plan("generator", tmp_path, precision="bf16")
    eager, _, _, _ = _one_step(plan, "bf16")
    start = time.perf_counter()
    compiled, _, moved, _ = _one_step(plan, "bf16", compile_backend="aot_eager")
    print(f"compiled micro generator step (aot_eager): {time.perf_counter() - start:.1f} s")
    assert moved
    # Same ops in the same order: equal up to bf16 rounding differences of fused casts.
    assert compiled == pytest.approx(eager, rel=1e-2)


def test_bf16_reduction_refused_under_zero3():
    from orchestrator.config import PRESETS, resolve
    from orchestrator.config.loading import ConfigError

    base = PRESETS["micro"]()
    training = replace(base.generator.training, zero_stage=3, grad_reduce_dtype="bf16")
    with pytest.raises(ConfigError, match=r"^generator\.training\.grad_reduce_dtype: "):
        resolve(replace(base, generator=replace(base.generator, training=training)))
    # bf16 reduction itself is allowed at ZeRO 0-2.
    resolve(
        replace(base, generator=replace(base.generator, training=replace(training, zero_stage=2)))
    )


@pytest.mark.parametrize("zero_stage", [0, 2, 3])
def test_consolidated_weights_load_lazily_and_exactly(zero_stage, tmp_path):
    """What a resume on another world size or ZeRO stage loads: the checkpoint's fp32 weights,
    read as lazy views of the memory-mapped shards and copied in one tensor at a time."""
    from orchestrator.train.state import DEEPSPEED_DIR, ENGINE_TAG, consolidated_weights
    from orchestrator.train.workload import load_full_weights

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.LayerNorm(8), nn.Linear(8, 2))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    engine = initialize(model, optimizer, _spec("fp32", zero_stage=zero_stage), False)
    try:
        loss = engine(torch.randn(MICRO, 4)).square().mean()
        engine.backward(loss)
        engine.step()
        engine.save_checkpoint(str(tmp_path / DEEPSPEED_DIR), tag=ENGINE_TAG)
        from orchestrator.train.engine import full_state_dict

        expected = full_state_dict(engine.module, zero_stage, keep=True)
    finally:
        engine.destroy()
    weights = consolidated_weights(tmp_path, zero_stage)
    if zero_stage == 3:
        # Not tensors: views that assemble a parameter only when asked.
        assert not any(isinstance(v, torch.Tensor) for k, v in weights.items() if "weight" in k)
    fresh = nn.Sequential(nn.Linear(4, 8), nn.LayerNorm(8), nn.Linear(8, 2))
    load_full_weights(fresh, weights)
    for key, value in fresh.state_dict().items():
        assert torch.equal(value, expected[key]), key
