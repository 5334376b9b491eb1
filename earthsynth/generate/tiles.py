"""Unbounded generation (MetaEarth): sliding windows, the noise constraint, blended centres, a streamed COG.

    generate_tiles(model, "condition.tif", "out/hr.tif", seed=0)          # resumable; COG georeferenced x4 finer
    hr_chw = generate_array(model, condition_chw, resolution_m, seed=0)  # the same windows, in memory

Geometry. The model samples windows of W = `model.config.sample_size` output pixels (conditioned on W / scale
condition pixels). With `overlap` (MetaEarth: "overlapping of 1/2 window area") windows are placed every S = W / 2
pixels, so every window border lies at the centre of its neighbours; without it, every W pixels (naive tiling).
The condition is reflect-padded so that the windows cover it exactly, and the output is cropped back.

Noise. With `shared_noise` (MetaEarth's noise constraint) windows agree on their initial noise wherever they
overlap. Two layouts (`noise_layout`): "field" (default) cuts every window's x_T out of one noise field over the
whole output, made of S x S blocks each seeded by its own block position, so two windows see identical noise on
their whole overlap and the field never repeats; "periodic" is the paper's letter: every window starts from the
SAME x_T, one S x S block tiled 2 x 2 (W / 2-periodic), which also satisfies the overlap conditions but repeats
the noise every S pixels, and a residual model turns it into texture that visibly repeats wherever the condition
is uniform (deserts, water). Without `shared_noise`, each window draws its own x_T.
DDIM with eta = 0 then makes the content a function of x_T and the condition only (MetaEarth's injective map).

Blending. Overlapping windows are mixed with a separable raised-cosine weight, w(x) = sin^2(pi (x + 1/2) / W),
which sums to exactly 1 across two windows half a window apart (sin^2 + cos^2); on the outer half of the first
and last window of a row or column the weight is 1. Why not keep each window's centre only: a centre crop makes
a hard cut between two windows, and what is not identical in their overlap becomes a one-pixel step; the ramp
spreads any residual difference over half a window and weights every window's pixels by their distance to its
border, where its receptive field lacked context (MetaEarth's reason for the overlap).

Memory and resume. Window rows are processed one at a time; a band of S output rows is final once the window
rows above and below it are done, and is then written to `<out>.parts.tmp/band_XXXXXX.npy`, with the pending
half-band (the carry) next to it. A killed run resumes after its last finished band (the job must be the same:
model, condition, settings, seed). At the end the bands are streamed into the COG (StreamingRasterWriter, written
atomically) and the work folder is removed. Memory: the condition (1/16 of the output's pixels) plus one band
of windows, independent of the output size.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from affine import Affine

from earthsynth.errors import ConfigError
from earthsynth.generate.condition import Condition, load_condition  # noqa: F401 (re-exported)
from earthsynth.generate.config import check_finite_positive
from earthsynth.generate.data import as_unit_rgb
from earthsynth.generate.tile_grid import (  # the window layout (tests and benchmarks import it from here too)
    Grid, _window_noise, axis_weights, field_window_noise, make_grid, pad_condition, shared_window_noise,
)
from earthsynth.io.atomic import atomic_path

NOISE_LAYOUTS = ("field", "periodic")


@dataclass(frozen=True)
class TileConfig:
    window_px: int | None = None    # output window side; None = the model's sample_size (MetaEarth: 256 px blocks)
    overlap: bool = True            # MetaEarth: sliding windows overlapping by 1/2 of a window
    shared_noise: bool = True       # MetaEarth noise constraint: windows agree on the noise of their overlaps
    noise_layout: str = "field"     # with shared_noise: "field" (position-seeded blocks) or "periodic" (the paper's
                                    # same x_T in every window); see the module docstring
    steps: int = 50                 # MetaEarth: DDIM, 50 steps, eta = 0
    batch_windows: int = 4          # windows denoised together (fixed chunks of a row: results are deterministic)
    strength: float | None = None   # fraction of the schedule run (sample.py); None = the model's default

    def __post_init__(self) -> None:
        for name in ("steps", "batch_windows"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"TileConfig.{name} must be a positive integer, got {value!r}")
        if self.strength is not None and not 0.0 < self.strength <= 1.0:
            raise ConfigError(f"TileConfig.strength must be in (0, 1] or None, got {self.strength!r}")
        if self.noise_layout not in NOISE_LAYOUTS:
            raise ConfigError(f"TileConfig.noise_layout must be one of {NOISE_LAYOUTS}, got {self.noise_layout!r}")
        if self.window_px is not None and (not isinstance(self.window_px, int) or self.window_px < 1):
            raise ConfigError(f"TileConfig.window_px must be a positive integer or None, got {self.window_px!r}")

    @property
    def method(self) -> str:
        """The ablation name: naive, noise, overlap or overlap+noise."""
        return {(False, False): "naive", (False, True): "noise", (True, False): "overlap",
                (True, True): "overlap+noise"}[(self.overlap, self.shared_noise)]


def _window_row(model, cond_padded: torch.Tensor, row: int, grid: Grid, config: TileConfig, seed: int,
                resolution_m: float, device, advance: Callable[[int], None]) -> np.ndarray:
    """The blended contribution (C, W, padded_w) float32 of window row `row`."""
    from earthsynth.generate.sample import sample
    c = cond_padded.shape[0]
    cw, cs = grid.window // grid.scale, grid.stride // grid.scale
    strip = np.zeros((c, grid.window, grid.padded_w), dtype=np.float32)
    wy = axis_weights(row, grid.rows, grid.window, grid.stride)
    periodic = config.shared_noise and config.noise_layout == "periodic"
    shared = shared_window_noise(c, grid, seed) if periodic else None
    layout = field_window_noise if config.shared_noise else _window_noise
    for start in range(0, grid.cols, config.batch_windows):
        cols = range(start, min(start + config.batch_windows, grid.cols))
        cond = torch.stack([cond_padded[:, row * cs: row * cs + cw, j * cs: j * cs + cw] for j in cols])
        noise = torch.stack([shared if shared is not None else layout(c, grid, seed, row, j) for j in cols])
        images = sample(model, cond, resolution_m, steps=config.steps, initial_noise=noise, device=device,
                        strength=config.strength)
        images = images.to("cpu", torch.float32).numpy()
        for k, j in enumerate(cols):
            wx = axis_weights(j, grid.cols, grid.window, grid.stride)
            strip[:, :, j * grid.stride: j * grid.stride + grid.window] += images[k] * (wy[:, None] * wx[None, :])
        advance(len(cols))
    return strip


def to_uint8(image: np.ndarray) -> np.ndarray:
    return np.round(np.clip(image, 0.0, 1.0) * 255.0).astype(np.uint8)


def iter_bands(model, cond_chw: torch.Tensor, resolution_m: float, grid: Grid, config: TileConfig, seed: int, *,
               device=None, start_band: int = 0, carry: np.ndarray | None = None,
               advance: Callable[[int], None] = lambda n: None) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """Yield (band index, band (C, rows, out_w) uint8, carry (C, W - S, padded_w) float32) for each band of
    `stride` output rows from `start_band` on, cropped to the output size; `carry` is the state to resume at
    `start_band` (None at band 0)."""
    cond_padded = pad_condition(cond_chw.to(torch.float32).cpu(), grid)
    c = cond_padded.shape[0]
    if carry is None:
        carry = np.zeros((c, grid.carry, grid.padded_w), dtype=np.float32)
    for band in range(start_band, grid.bands):
        if band < grid.rows:
            acc = _window_row(model, cond_padded, band, grid, config, seed, resolution_m, device, advance)
            acc[:, : grid.carry] += carry
        else:   # the last half-band: nothing below it
            acc = carry
        carry = np.ascontiguousarray(acc[:, grid.stride:])
        rows = min(grid.stride, grid.out_h - band * grid.stride)
        yield band, to_uint8(acc[:, :rows, : grid.out_w]), carry


def as_condition_chw(condition) -> torch.Tensor:
    """(H, W, 3) / (H, W) array (uint8, or float in [0, 1]) or a (3, H, W) tensor -> float32 (3, H, W)."""
    if isinstance(condition, torch.Tensor):
        if condition.ndim != 3:
            raise ConfigError(f"a condition tensor must be (C, H, W) in [0, 1], got {tuple(condition.shape)}")
        return condition.detach().to("cpu", torch.float32)
    arr = np.asarray(condition)
    if arr.ndim == 3 and arr.shape[0] in (1, 3) and arr.shape[2] not in (1, 3):
        arr = np.moveaxis(arr, 0, -1)            # (C, H, W) array
    rgb = as_unit_rgb(arr[..., 0] if arr.ndim == 3 and arr.shape[2] == 1 else arr, where="condition")
    return torch.from_numpy(rgb).permute(2, 0, 1)   # a view: the condition is held once


def generate_array(model, condition, resolution_m: float, *, seed: int = 0, config: TileConfig = TileConfig(),
                   device=None, progress: bool = False) -> np.ndarray:
    """The tiled generation of `condition` ((H, W, 3) array or (3, H, W) tensor in [0, 1]) held in memory:
    returns (3, H * scale, W * scale) uint8. `resolution_m` is the GSD of the output (m/px)."""
    check_finite_positive("resolution_m", resolution_m)
    cond = as_condition_chw(condition)
    grid = make_grid(model, cond.shape[1], cond.shape[2], config)
    out = np.zeros((cond.shape[0], grid.out_h, grid.out_w), dtype=np.uint8)
    with _progress(progress, grid.rows * grid.cols, f"tiles {config.method}") as advance:
        for band, pixels, _ in iter_bands(model, cond, resolution_m, grid, config, seed, device=device,
                                          advance=advance):
            out[:, band * grid.stride: band * grid.stride + pixels.shape[1]] = pixels
    return out


class _progress:
    """A rich progress bar over windows (or nothing); yields the `advance(n)` callable."""

    def __init__(self, enabled: bool, total: int, description: str):
        self.enabled, self.total, self.description = enabled, total, description

    def __enter__(self) -> Callable[[int], None]:
        if not self.enabled:
            self._bar = None
            return lambda n: None
        from rich.progress import Progress
        self._bar = Progress(transient=False)
        self._bar.__enter__()
        task = self._bar.add_task(self.description, total=self.total)
        return lambda n: self._bar.advance(task, n)

    def __exit__(self, *exc) -> bool:
        if self._bar is not None:
            self._bar.__exit__(*exc)
        return False


# --------------------------------------------------------------------------------------------------------------
# the resumable COG output
# --------------------------------------------------------------------------------------------------------------

@dataclass
class TilesResult:
    path: Path
    width: int
    height: int
    resolution_m: float
    method: str
    windows: int
    bands_resumed: int      # bands found finished in the work folder and skipped
    seconds: float


def job_key(model, cond: torch.Tensor, resolution_m: float, config: TileConfig, seed: int, transform, crs) -> dict:
    """What makes two runs the same job: a resume refuses a work folder made by another one."""
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy())
    return {"model_sha256": h.hexdigest(), "condition_sha256": _sha256_chw(cond),
            "condition_shape": list(cond.shape), "resolution_m": resolution_m, "seed": seed,
            "config": asdict(config), "window_px": config.window_px or model.config.sample_size,
            "transform": list(transform)[:6] if transform is not None else None, "crs": crs}


def _sha256_chw(cond: torch.Tensor) -> str:
    h = hashlib.sha256()
    for band in cond:           # band by band: no full contiguous copy of a permuted view
        h.update(band.contiguous().numpy())
    return h.hexdigest()


def _open_work_dir(work: Path, key: dict, resume: bool) -> None:
    job = work / "job.json"
    if work.exists() and (not resume or not job.is_file()):
        shutil.rmtree(work)
    if job.is_file() and json.loads(job.read_text()) != key:
        raise ConfigError("the unfinished run in this work folder was started with another model, condition, "
                          "settings or seed", path=work,
                          hint="delete the folder (or pass resume=False / --no-resume) to start this job over, "
                               "or choose another output path")
    work.mkdir(parents=True, exist_ok=True)
    if not job.is_file():
        with atomic_path(job) as tmp:
            tmp.write_text(json.dumps(key, indent=2, sort_keys=True))


def _finished_bands(work: Path, grid: Grid) -> tuple[int, np.ndarray | None]:
    """How many bands are finished (band files 0..k-1 and the carry after k-1), and that carry."""
    done = 0
    while done < grid.bands and (work / f"band_{done:06d}.npy").is_file():
        done += 1
    while done > 0:
        carry_path = work / f"carry_{done - 1:06d}.npy"
        if carry_path.is_file():
            return done, np.load(carry_path)
        done -= 1      # a band without its carry (killed between the two renames): redo it
    return 0, None


def _save_band(work: Path, band: int, pixels: np.ndarray, carry: np.ndarray) -> None:
    with atomic_path(work / f"carry_{band:06d}.npy") as tmp:
        np.save(tmp, carry)
    with atomic_path(work / f"band_{band:06d}.npy") as tmp:
        np.save(tmp, pixels)
    old = work / f"carry_{band - 1:06d}.npy"
    if old.exists():
        old.unlink()


def generate_tiles(model, condition, out_path: str | Path, *, condition_m: float | None = None,
                   transform: Affine | None = None, crs: str | None = None, seed: int = 0,
                   config: TileConfig = TileConfig(), device=None, resume: bool = True, progress: bool = False,
                   on_band: Callable[[int, int], None] | None = None) -> TilesResult:
    """Generate the x`scale` image of `condition` (a raster / image path, or an (H, W, 3) array with
    `condition_m` and optionally `transform` / `crs`) window by window into a COG at `out_path`.

    condition_m: the condition's GSD (m/px; default: from the raster's transform); the output is
    condition_m / scale m/px, with the condition's transform refined x scale. on_band(band, bands) is called
    after each finished band. A re-run with the same arguments resumes after the last finished band."""
    started = time.perf_counter()
    if isinstance(condition, (str, Path)):
        loaded = load_condition(condition)
        rgb, transform, crs = loaded.rgb_hw3, transform or loaded.transform, crs or loaded.crs
        condition_m = condition_m if condition_m is not None else loaded.gsd_m
        if condition_m is None:
            raise ConfigError(f"{condition} has no geotransform, so its GSD is unknown",
                              hint="state the condition's m/px (condition_m / --condition-m)")
    else:
        rgb = condition
    if condition_m is None:
        raise ConfigError("condition_m (the condition's m/px) is needed for an array condition")
    condition_m = check_finite_positive("condition_m", condition_m)
    scale = model.config.scale
    resolution_m = condition_m / scale
    cond = as_condition_chw(rgb)
    grid = make_grid(model, cond.shape[1], cond.shape[2], config)
    out_path = Path(out_path)
    work = out_path.with_name(out_path.name + ".parts.tmp")
    _open_work_dir(work, job_key(model, cond, resolution_m, config, seed, transform, crs), resume)
    done, carry = _finished_bands(work, grid)
    rows_done = min(done, grid.rows)
    with _progress(progress, grid.rows * grid.cols, f"tiles {config.method}") as advance:
        advance(rows_done * grid.cols)
        for band, pixels, carry in iter_bands(model, cond, resolution_m, grid, config, seed, device=device,
                                              start_band=done, carry=carry, advance=advance):
            _save_band(work, band, pixels, carry)
            if on_band is not None:
                on_band(band, grid.bands)
    _assemble(work, out_path, grid, cond.shape[0], transform, crs, config, seed, resolution_m)
    shutil.rmtree(work, ignore_errors=True)
    return TilesResult(out_path, grid.out_w, grid.out_h, resolution_m, config.method, grid.rows * grid.cols, done,
                       time.perf_counter() - started)


def _assemble(work: Path, out_path: Path, grid: Grid, channels: int, transform, crs, config: TileConfig,
              seed: int, resolution_m: float) -> None:
    """Stream the finished bands, one at a time, into the COG (written atomically)."""
    from earthsynth.io.raster import StreamingRasterWriter
    out_transform = transform @ Affine.scale(1.0 / grid.scale) if transform is not None else None
    tags = {"earthsynth": "MetaEarth tiled generation", "resolution_m": resolution_m, "seed": seed,
            "method": config.method, "ddim_steps": config.steps, "window_px": grid.window}
    with StreamingRasterWriter(out_path, grid.out_w, grid.out_h, channels, "uint8", transform=out_transform,
                               crs=crs, block=256, tags=tags) as writer:
        for band in range(grid.bands):
            writer.write_window(band * grid.stride, 0, np.load(work / f"band_{band:06d}.npy"))
