"""ODE samplers for rectified-flow velocity models (LightningDiT), kept apart from the network.

Sampling integrates dx/dt = v(x, t) forward from t = 0 (noise) to t = 1 (data), as the reference
`transport.Sampler.sample_ode` does (hustvl/LightningDiT `transport/integrators.py`):

* the grid is `linspace(0, 1, num_steps)` in float32, optionally time-shifted; `num_steps` counts
  **grid points**, so Euler makes num_steps - 1 model calls (the released 250 -> 249 steps);
* "euler" is x_{k+1} = x_k + (t_{k+1} - t_k) * v(x_k, t_k) on that grid (bit-identical to
  torchdiffeq's fixed-grid Euler that the reference calls); "heun" is the trapezoidal
  predictor-corrector on the same grid (2 calls per step);
* "dopri5" is torchdiffeq's adaptive Dormand-Prince, the reference solver of the paper's
  small-scale tables (atol 1e-6, rtol 1e-3, no shift, no CFG interval). Its steps do not depend on
  the grid, which only sets where a trajectory is reported.

* "ddpm" is DiT's ancestral sampler for its discrete epsilon-prediction objective (paper Tab. 1,
  rung 0; `workloads.dit.diffusion`): `num_steps` evenly respaced steps of the 1000-step schedule
  (DiT samples with 250), the learned variance where the model has one, run from step 999 down.
  It has no time grid: `timestep_shift` and `cfg_interval_start` must stay 0.

A run is fully described by one serialisable `SamplerSpec`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
from torch import nn

# The settings are defined in a torch-free module, so the config schema can build on them.
from workloads.sampler_spec import METHODS, SamplerSpec  # noqa: F401  (re-exported)

# A source of fresh standard-normal noise shaped like the batch, one draw per call.
StepNoise = Callable[[], torch.Tensor]

# v(x, t): x (B, C, H, W), t a 0-d float32 tensor -> velocity (B, C, H, W).
Velocity = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def time_grid(spec: SamplerSpec) -> torch.Tensor:
    """The float32 grid of `num_steps` points from 0 to 1, shifted exactly as the reference does."""
    grid = torch.linspace(0.0, 1.0, spec.num_steps, dtype=torch.float32)
    s = spec.timestep_shift
    # The reference shifts only when s > 0, so its plain runs pass 0; s = 1 is the identity anyway.
    if s > 0:
        # Elementwise in float32 with the same operation order as the reference list comprehension.
        grid = s * grid / (1 + (s - 1) * grid)
    return grid


# ---------------------------------------------------------------------------- velocity functions


def model_velocity(
    model: nn.Module,
    y: torch.Tensor,
    spec: SamplerSpec,
    null_class: int | None = None,
    variance: bool = False,
) -> Velocity:
    """The conditional (optionally guided) velocity of a LightningDiT-like model (its eps, and
    with `variance` its learned-variance channels, under the DDPM objective).

    With CFG the model sees the doubled batch [x; x] with labels [y; null] through
    `forward_with_cfg`, and the conditional (first) half is returned.
    """
    extra = {"variance": True} if variance else {}
    if not spec.uses_cfg:

        def conditional(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            return model(x, t.reshape(1).expand(x.shape[0]), y, **extra)

        return conditional

    null = model.num_classes if null_class is None else null_class
    labels = torch.cat([y, torch.full_like(y, null)])

    def guided(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        pair = torch.cat([x, x], dim=0)
        out = model.forward_with_cfg(
            pair,
            t.reshape(1).expand(pair.shape[0]),
            labels,
            cfg_scale=spec.cfg_scale,
            cfg_interval_start=spec.cfg_interval_start,
            cfg_channels=spec.cfg_channels,
            **extra,
        )
        return out[: x.shape[0]]

    return guided


# ---------------------------------------------------------------------------- solvers


def _fixed_grid_states(
    velocity: Velocity, x: torch.Tensor, grid: torch.Tensor, method: str
) -> Iterator[torch.Tensor]:
    """Yield the state at every grid point, the initial one first."""
    yield x
    for t0, t1 in zip(grid[:-1], grid[1:]):
        dt = t1 - t0
        v0 = velocity(x, t0)
        if method == "euler":
            x = x + dt * v0
        else:
            # Trapezoidal corrector: average the slopes at both ends of the Euler predictor.
            v1 = velocity(x + dt * v0, t1)
            x = x + dt * (0.5 * (v0 + v1))
        yield x


def _dopri5(
    velocity: Velocity, x: torch.Tensor, grid: torch.Tensor, spec: SamplerSpec
) -> torch.Tensor:
    """torchdiffeq dopri5 as the reference calls it; output at every point of `grid`.

    Like the reference, the adaptive steps may overshoot t = 1 (the model is then evaluated at
    t > 1) before the dense output is interpolated back onto the grid.
    """

    def time_first(t: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        # torchdiffeq calls func(t, y).
        return velocity(state, t)

    from torchdiffeq import odeint  # here: it imports scipy.integrate, which Euler never needs

    return odeint(time_first, x, grid, method="dopri5", atol=spec.atol, rtol=spec.rtol)


def ddpm_ancestral(
    model: nn.Module,
    noise: torch.Tensor,
    y: torch.Tensor,
    spec: SamplerSpec,
    null_class: int | None = None,
    step_noise: StepNoise | None = None,
) -> torch.Tensor:
    """DiT's `p_sample_loop` on `spec.num_steps` respaced steps: x_{k-1} = mean + sigma * z, no
    noise added at the last step. `step_noise` supplies each z (default: the global torch
    stream); the network is fed the original step number of each respaced step."""
    from workloads.dit.diffusion import GaussianDiffusion

    diffusion, kept = GaussianDiffusion.linear().respaced(spec.num_steps)
    learn_sigma = bool(getattr(model, "learn_sigma", False))
    predict = model_velocity(model, y, spec, null_class, variance=learn_sigma)
    x = noise
    for k in reversed(range(len(kept))):
        index = torch.full((x.shape[0],), k, device=x.device, dtype=torch.long)
        output = predict(x, torch.tensor(float(kept[k]), device=x.device))
        mean, log_var = diffusion.p_mean_variance(output.float(), x, index, learn_sigma)
        if k == 0:
            return mean
        z = step_noise() if step_noise is not None else torch.randn_like(x)
        x = mean + torch.exp(0.5 * log_var) * z.to(x.device, x.dtype)
    return x


def _check_ode(spec: SamplerSpec) -> None:
    if spec.method == "ddpm":
        raise ValueError("ddpm is not an ODE solver: sample() runs it")


def integrate(velocity: Velocity, x_init: torch.Tensor, spec: SamplerSpec) -> torch.Tensor:
    """The state at t = grid[-1] (= 1), keeping no intermediate states."""
    _check_ode(spec)
    grid = time_grid(spec).to(x_init.device)
    if spec.method == "dopri5":
        # Adaptive steps ignore the output grid, so asking for the end point only is the same
        # final state without storing num_steps intermediate batches.
        return _dopri5(velocity, x_init, grid[[0, -1]], spec)[-1]
    final = x_init
    for state in _fixed_grid_states(velocity, x_init, grid, spec.method):
        final = state  # earlier states are released as the loop advances
    return final


def integrate_trajectory(
    velocity: Velocity, x_init: torch.Tensor, spec: SamplerSpec
) -> torch.Tensor:
    """States at every grid point, (num_steps, *x_init.shape); [0] is x_init, [-1] the sample."""
    _check_ode(spec)
    grid = time_grid(spec).to(x_init.device)
    if spec.method == "dopri5":
        return _dopri5(velocity, x_init, grid, spec)
    return torch.stack(list(_fixed_grid_states(velocity, x_init, grid, spec.method)))


# ---------------------------------------------------------------------------- entry point


@torch.no_grad()
def sample(
    model: nn.Module,
    noise: torch.Tensor,
    y: torch.Tensor,
    spec: SamplerSpec,
    null_class: int | None = None,
    step_noise: StepNoise | None = None,
) -> torch.Tensor:
    """Final conditional samples (B, C, H, W) in model latent space, from noise at t = 0.

    `null_class` (the unconditional label for CFG) defaults to `model.num_classes`; `step_noise`
    feeds the ancestral `ddpm` sampler (the ODE methods draw nothing after the initial noise).
    De-normalise with `LatentStats.invert` before decoding.
    """
    if noise.ndim != 4:
        raise ValueError(f"noise must be (B, C, H, W), got {tuple(noise.shape)}")
    if y.shape != (noise.shape[0],):
        raise ValueError(f"y must have shape ({noise.shape[0]},), got {tuple(y.shape)}")
    if model.training:
        raise ValueError(
            "call model.eval() before sampling: in train mode labels are dropped at random"
        )
    if spec.method == "ddpm":
        return ddpm_ancestral(model, noise, y, spec, null_class, step_noise)
    return integrate(model_velocity(model, y, spec, null_class), noise, spec)
