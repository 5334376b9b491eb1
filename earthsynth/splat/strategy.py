"""Densification as a strategy object (gsplat's design), kept out of the trainer.

The trainer owns `params` (a `GaussianModel.params` ParameterDict, or any dict of per-Gaussian Parameters) and
`optimizers` (one Adam per parameter, same keys); the strategy is a frozen, stateless config whose running
state lives in the dict returned by `initialize_state()`:

    strategy = DensifyPruneStrategy()
    state = strategy.initialize_state(scene_scale=...)
    for step in range(steps):
        colors, alphas, meta = model.render(...)
        strategy.step_pre_backward(model.params, optimizers, state, step, meta)
        loss.backward()
        strategy.step_post_backward(model.params, optimizers, state, step, meta)
        for opt in optimizers.values(): opt.step(); opt.zero_grad()

When Gaussians are added or removed every per-Gaussian tensor follows: the parameters (all keys, so extra ones
such as the appearance model's `gaussian_embeddings` too), their Adam moments (`exp_avg`, `exp_avg_sq`: kept
rows keep theirs, new rows start at zero) and the tensors in the strategy state.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from earthsynth.errors import ConfigError

Params = Union[Dict[str, nn.Parameter], nn.ParameterDict]
Optimizers = Dict[str, torch.optim.Optimizer]


# ---------------------------------------------------------------------------------------------------- ops
@torch.no_grad()
def update_params_and_optimizers(param_fn: Callable[[str, Tensor], Tensor],
                                 optimizer_fn: Callable[[str, Tensor], Tensor], params: Params,
                                 optimizers: Optimizers, names=None) -> None:
    """Replace each parameter by `param_fn(name, p)` and each of its Adam state tensors by `optimizer_fn(key, v)`
    (the scalar `step` is kept), re-pointing the optimizer at the new Parameter."""
    for name in list(params.keys()) if names is None else names:
        old = params[name]
        if name not in optimizers and old.requires_grad:
            raise ConfigError(f"parameter {name!r} is trainable but has no optimizer",
                              hint="pass one optimizer per trainable parameter (model.create_optimizers())")
        new = nn.Parameter(param_fn(name, old), requires_grad=old.requires_grad)
        params[name] = new
        if name not in optimizers:
            continue
        optimizer = optimizers[name]
        for group in optimizer.param_groups:
            state = optimizer.state.pop(old, {})
            for key, value in state.items():
                if key != "step":
                    state[key] = optimizer_fn(key, value)
            group["params"] = [new]
            optimizer.state[new] = state


def _zeros_rows(like: Tensor, rows: int) -> Tensor:
    return torch.zeros((rows, *like.shape[1:]), dtype=like.dtype, device=like.device)


def _update_state_rows(state: dict, fn: Callable[[Tensor], Tensor]) -> None:
    for key, value in state.items():
        if isinstance(value, Tensor):
            state[key] = fn(value)


@torch.no_grad()
def duplicate(params: Params, optimizers: Optimizers, state: dict, mask: Tensor) -> None:
    """Clone the masked Gaussians (3DGS "clone"): copies appended at the end, with zero Adam moments."""
    sel = torch.where(mask)[0]
    update_params_and_optimizers(lambda name, p: torch.cat([p, p[sel]]),
                                 lambda key, v: torch.cat([v, _zeros_rows(v, len(sel))]), params, optimizers)
    _update_state_rows(state, lambda v: torch.cat([v, v[sel]]))


def split_samples(params: Params, sel: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """[2, M, 3] offsets drawn from each selected Gaussian N(0, R S^2 R^T). Drawn on the CPU so that the same
    generator gives the same children on every device."""
    scales = torch.exp(params["scales"][sel])
    rotmats = quat_to_rotmat(F.normalize(params["quats"][sel], dim=-1))
    noise = torch.randn((2, len(sel), 3), generator=generator).to(scales.device, scales.dtype)
    return torch.einsum("nij,nj,bnj->bni", rotmats, scales, noise)


@torch.no_grad()
def split(params: Params, optimizers: Optimizers, state: dict, mask: Tensor,
          generator: torch.Generator | None = None) -> None:
    """Replace each masked Gaussian by 2 children (3DGS "split"): centres sampled from the parent Gaussian,
    scales / 1.6, everything else copied. Survivors keep their order and Adam moments; the children (all first
    children, then all second children) are appended with zero moments."""
    sel = torch.where(mask)[0]
    rest = torch.where(~mask)[0]
    samples = split_samples(params, sel, generator)
    log_child_scales = torch.log(torch.exp(params["scales"][sel]) / 1.6)

    def param_fn(name: str, p: Tensor) -> Tensor:
        if name == "means":
            children = (p[sel] + samples).reshape(-1, 3)
        elif name == "scales":
            children = log_child_scales.repeat(2, 1)
        else:
            children = p[sel].repeat(2, *[1] * (p.dim() - 1))
        return torch.cat([p[rest], children])

    update_params_and_optimizers(param_fn, lambda key, v: torch.cat([v[rest], _zeros_rows(v, 2 * len(sel))]),
                                 params, optimizers)
    _update_state_rows(state, lambda v: torch.cat([v[rest], v[sel].repeat(2, *[1] * (v.dim() - 1))]))


@torch.no_grad()
def remove(params: Params, optimizers: Optimizers, state: dict, mask: Tensor) -> None:
    """Drop the masked Gaussians; the others keep their order and Adam moments."""
    keep = torch.where(~mask)[0]
    update_params_and_optimizers(lambda name, p: p[keep], lambda key, v: v[keep], params, optimizers)
    _update_state_rows(state, lambda v: v[keep])


@torch.no_grad()
def reset_opacities(params: Params, optimizers: Optimizers, value: float) -> None:
    """Clamp opacities to at most `value` (post-sigmoid) and zero their Adam moments (3DGS opacity reset)."""
    max_logit = torch.logit(torch.tensor(value, dtype=torch.float64)).item()
    update_params_and_optimizers(lambda name, p: p.clamp(max=max_logit), lambda key, v: torch.zeros_like(v),
                                 params, optimizers, names=["opacities"])


def quat_to_rotmat(quats_n4: Tensor) -> Tensor:
    """Unit quaternions (w, x, y, z) -> [N, 3, 3] rotation matrices."""
    w, x, y, z = quats_n4.unbind(-1)
    return torch.stack([
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], dim=-1).reshape(-1, 3, 3)


# ---------------------------------------------------------------------------------------------------- strategies
@dataclass(frozen=True)
class Strategy:
    """Interface: a frozen config; the running state lives in the dict of `initialize_state()`."""

    def initialize_state(self, scene_scale: float = 1.0) -> dict[str, Any]:
        return {"scene_scale": float(scene_scale)}

    def check_sanity(self, params: Params, optimizers: Optimizers) -> None:
        trainable = {name for name, p in params.items() if p.requires_grad}
        if trainable != set(optimizers):
            raise ConfigError(f"trainable parameters {sorted(trainable)} and optimizers {sorted(optimizers)} "
                              "must have the same keys", hint="create the optimizers with model.create_optimizers()")
        for name, optimizer in optimizers.items():
            if len(optimizer.param_groups) != 1 or len(optimizer.param_groups[0]["params"]) != 1:
                raise ConfigError(f"optimizer {name!r} must hold exactly one parameter in one param group")

    def step_pre_backward(self, params: Params, optimizers: Optimizers, state: dict, step: int, info: dict) -> None:
        """Before `loss.backward()`."""

    def step_post_backward(self, params: Params, optimizers: Optimizers, state: dict, step: int, info: dict,
                           packed: bool = False) -> dict[str, int]:
        """After `loss.backward()`, before the optimizer steps. Returns counts of what changed."""
        return {}


@dataclass(frozen=True)
class DensifyPruneStrategy(Strategy):
    """3DGS adaptive density control (Inria / gsplat DefaultStrategy) with Skyfall-GS's settings.

    Every `refine_every` steps in (refine_start_iter, refine_stop_iter): Gaussians whose mean screen-space
    gradient exceeds `grow_grad2d` are cloned when small (max scale <= grow_scale3d * scene_scale) and split when
    large; then those with opacity < prune_opa are pruned and, after the first opacity reset, those with a
    world-space max scale > prune_scale3d * scene_scale. Every `reset_every` steps opacities are clamped to
    2 * prune_opa. `scene_scale` (state, metres) is the radius of the reconstructed area.
    """

    prune_opa: float = 0.005                 # Inria min_opacity 0.005
    grow_grad2d: float = 2e-4                # Inria densify_grad_threshold, on grads in pixel-ish units (below)
    grow_scale3d: float = 0.01               # Inria percent_dense, a fraction of scene_scale
    # Skyfall-GS 0.B.1.3 prunes Gaussians whose "maximum covariance exceeds 20" in its scene units; we read it as
    # the largest world-space standard deviation, in scenes whose IDU look-at grid is 512 units wide (0.B.1.5),
    # i.e. 20 / 256 of the scene half-width. Unit: a fraction of scene_scale (so 20 m when scene_scale = 256 m).
    prune_scale3d: float = 20.0 / 256.0
    refine_start_iter: int = 1_000           # Skyfall-GS 0.B.1.3: densification from iteration 1,000 ...
    refine_stop_iter: int = 21_000           # ... to 21,000 (IDU episodes: 9,000, 0.B.1.5)
    refine_every: int = 100                  # Inria densification_interval
    reset_every: int = 3_000                 # Inria opacity_reset_interval
    absgrad: bool = False                    # AbsGS gradients (needs the rasteriser's absgrad)
    seed: int = 0                            # split children are drawn from a generator seeded by (seed, step)

    def __post_init__(self):
        if not 0.0 < self.prune_opa < 0.5:
            raise ConfigError(f"prune_opa must be in (0, 0.5), got {self.prune_opa}")
        for name in ("grow_grad2d", "grow_scale3d", "prune_scale3d"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"DensifyPruneStrategy.{name} must be > 0, got {getattr(self, name)}")
        if self.refine_every < 1 or self.reset_every < 1:
            raise ConfigError("refine_every and reset_every must be >= 1")

    def initialize_state(self, scene_scale: float = 1.0) -> dict[str, Any]:
        if not scene_scale > 0:
            raise ConfigError(f"scene_scale must be a positive number of metres, got {scene_scale}")
        # grad2d / count are created on the first step, on the device of the gradients.
        return {"grad2d": None, "count": None, "scene_scale": float(scene_scale)}

    def check_sanity(self, params: Params, optimizers: Optimizers) -> None:
        super().check_sanity(params, optimizers)
        missing = [k for k in ("means", "quats", "scales", "opacities") if k not in params]
        if missing:
            raise ConfigError(f"DensifyPruneStrategy needs the parameters {', '.join(missing)}")

    def step_pre_backward(self, params, optimizers, state, step, info) -> None:
        if "means2d" not in info:
            raise ConfigError("the render meta has no 'means2d': the densification gradient cannot be read")
        info["means2d"].retain_grad()

    def step_post_backward(self, params, optimizers, state, step, info, packed=False) -> dict[str, int]:
        if step >= self.refine_stop_iter:
            return {}
        self._accumulate(params, state, info, packed)
        counts = {}
        if step > self.refine_start_iter and step % self.refine_every == 0:
            counts["duplicated"], counts["split"] = self._grow(params, optimizers, state, step)
            counts["pruned"] = self._prune(params, optimizers, state, step)
            state["grad2d"].zero_()
            state["count"].zero_()
        if step > 0 and step % self.reset_every == 0:
            reset_opacities(params, optimizers, value=2.0 * self.prune_opa)
            counts["opacity_reset"] = 1
        return counts

    def _accumulate(self, params, state, info, packed) -> None:
        """Add each visible Gaussian's screen-space gradient norm. gsplat's normalisation: means2d grads (per
        pixel) times (W/2, H/2), i.e. per unit of the [-1, 1] NDC square, times the number of cameras (a batch
        loss averages over cameras)."""
        means2d = info["means2d"]
        grads = (means2d.absgrad if self.absgrad else means2d.grad)
        if grads is None:
            raise ConfigError("means2d has no gradient: call step_pre_backward before loss.backward()")
        grads = grads.detach().clone()
        grads[..., 0] *= info["width"] / 2.0 * info["n_cameras"]
        grads[..., 1] *= info["height"] / 2.0 * info["n_cameras"]
        n = len(params["means"])
        if state["grad2d"] is None or len(state["grad2d"]) != n:
            state["grad2d"] = torch.zeros(n, device=grads.device)
            state["count"] = torch.zeros(n, device=grads.device)
        if packed:
            gaussian_ids = info["gaussian_ids"]
        else:
            radii = info["radii"]
            visible = (radii > 0).all(dim=-1) if radii.dim() == 3 else radii > 0     # gsplat >= 1.5: [C, N, 2]
            gaussian_ids = torch.where(visible)[1]
            grads = grads[visible]
        state["grad2d"].index_add_(0, gaussian_ids, grads.norm(dim=-1).to(state["grad2d"].dtype))
        state["count"].index_add_(0, gaussian_ids, torch.ones_like(gaussian_ids, dtype=state["count"].dtype))

    @torch.no_grad()
    def _grow(self, params, optimizers, state, step) -> tuple[int, int]:
        grads = state["grad2d"] / state["count"].clamp_min(1)
        is_grad_high = grads > self.grow_grad2d
        is_small = torch.exp(params["scales"]).max(dim=-1).values <= self.grow_scale3d * state["scene_scale"]
        is_dupli = is_grad_high & is_small
        is_split = is_grad_high & ~is_small
        n_dupli, n_split = int(is_dupli.sum()), int(is_split.sum())
        if n_dupli:
            duplicate(params, optimizers, state, is_dupli)
        # the fresh clones (appended last) are not split in the same round
        is_split = torch.cat([is_split, torch.zeros(n_dupli, dtype=torch.bool, device=is_split.device)])
        if n_split:
            split(params, optimizers, state, is_split, generator=self.split_generator(step))
        return n_dupli, n_split

    @torch.no_grad()
    def _prune(self, params, optimizers, state, step) -> int:
        is_prune = torch.sigmoid(params["opacities"]) < self.prune_opa
        if step > self.reset_every:   # as Inria / gsplat: size pruning only once opacities have been reset
            is_prune |= torch.exp(params["scales"]).max(dim=-1).values > self.prune_scale3d * state["scene_scale"]
        n_prune = int(is_prune.sum())
        if n_prune:
            remove(params, optimizers, state, is_prune)
        return n_prune

    def split_generator(self, step: int) -> torch.Generator:
        """A CPU generator determined by (seed, step): a resumed run splits exactly as an uninterrupted one."""
        return torch.Generator().manual_seed((int(self.seed) * 1_000_003 + int(step)) % (2**63))
