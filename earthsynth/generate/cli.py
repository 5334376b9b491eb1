"""`earthsynth generate ...`: train | sample | cascade | tiles | augment (thin: parse -> call -> report).

The lead mounts it with `app.add_typer(generate_app, name="generate")` in earthsynth/cli.py. Every verb except
`train` uses the shipped default weights unless `--model` names a folder written by `save_pretrained` (or by
`export_weights`).
"""

from __future__ import annotations

import functools
import json
from dataclasses import replace
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

generate_app = typer.Typer(no_args_is_help=True, help="MetaEarth: multi-resolution, unbounded EO image generation.")
console = Console(stderr=True)

MODEL_HELP = "model folder (config.json + model.safetensors); default: the shipped weights"
STRENGTH_HELP = ("fraction of the noise schedule run, from the noised bicubic up-sampling (default: 0.6 for "
                 "residual models such as the shipped one, 1 = all of it from pure noise)")
PRESETS = ("shipped", "cpu-default", "tiny")


def user_errors(fn):
    """earthsynth.cli.user_errors (EarthsynthError -> one message, exit 2), looked up at call time so that
    earthsynth.cli may import this module at its top without an import cycle."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from earthsynth.cli import user_errors as outer
        return outer(fn)(*args, **kwargs)
    return wrapper


def _model(path: Optional[Path], device: Optional[str]):
    if path is None:
        from earthsynth.generate.weights import load_default_model
        return load_default_model(device)
    from earthsynth.generate.model import MetaEarthDenoiser
    return MetaEarthDenoiser.from_pretrained(path, device=device)


def _condition(path: Path, condition_m: Optional[float]):
    from earthsynth.errors import ConfigError
    from earthsynth.generate.tiles import load_condition
    loaded = load_condition(path)
    gsd = condition_m if condition_m is not None else loaded.gsd_m
    if gsd is None:
        raise ConfigError(f"{path} has no geotransform, so its m/px is unknown", hint="pass --condition-m")
    return loaded, gsd


def _save_image(path: Path, rgb_hw3, transform=None, crs=None) -> None:
    from earthsynth.io.atomic import atomic_path
    if path.suffix.lower() in (".tif", ".tiff"):
        import numpy as np
        from earthsynth.io.raster import write_raster
        write_raster(path, np.moveaxis(rgb_hw3, -1, 0), transform=transform, crs=crs)
        return
    from PIL import Image
    with atomic_path(path) as tmp:
        Image.fromarray(rgb_hw3).save(tmp)


@generate_app.command("train")
@user_errors
def train_cmd(
    out: Path = typer.Option(..., "--out", help="run folder (checkpoints, config.json, model/)"),
    preset: str = typer.Option("shipped", help=f"one of {PRESETS} (ignored with --config)"),
    config: Optional[Path] = typer.Option(None, "--config", help="TrainConfig JSON"),
    steps: Optional[int] = typer.Option(None, help="override the number of optimiser steps"),
    no_resume: bool = typer.Option(False, "--no-resume", help="ignore existing checkpoints"),
    device: Optional[str] = typer.Option(None, help="torch device (default: what accelerate finds)"),
):
    """Train (or resume) the MetaEarth denoiser."""
    from earthsynth.errors import ConfigError, InputFileError
    from earthsynth.generate.train import DataConfig, TrainConfig, train
    sources = None
    if config is not None:
        if not config.is_file():
            raise InputFileError("no such config file", path=config)
        train_config = TrainConfig.from_json(config.read_text())
    elif preset == "shipped":
        from earthsynth.generate.presets import shipped_sources, shipped_train_config
        train_config, sources = shipped_train_config(), shipped_sources()
    elif preset == "cpu-default":
        train_config = TrainConfig.cpu_default()
    elif preset == "tiny":
        from earthsynth.generate.config import DenoiserConfig
        train_config = TrainConfig(model=DenoiserConfig.tiny(), data=DataConfig(sources=("procedural",)),
                                   steps=100, batch_size=2, gradient_accumulation_steps=1, learning_rate=1e-3,
                                   checkpoint_every=50)
    else:
        raise ConfigError(f"unknown preset {preset!r}", hint=f"choose one of {PRESETS}")
    if steps is not None:
        train_config = replace(train_config, steps=steps)
    result = train(train_config, out, resume=not no_resume, device=device, sources=sources, progress=True)
    last = f", last loss {result.losses[-1]:.4f}" if result.losses else ""
    console.print(f"trained to step {result.step}{last}; EMA model -> {result.model_dir}")


@generate_app.command("sample")
@user_errors
def sample_cmd(
    condition: Path = typer.Argument(..., help="low-resolution RGB image (GeoTIFF, PNG, JPEG)"),
    out: Path = typer.Option(..., "--out", help="output .png or .tif (GeoTIFF keeps the georeferencing, x4)"),
    condition_m: Optional[float] = typer.Option(None, "--condition-m", help="m/px of the condition "
                                                "(default: from its geotransform)"),
    model: Optional[Path] = typer.Option(None, "--model", help=MODEL_HELP),
    seed: int = typer.Option(0, help="random seed (same seed -> same bytes)"),
    steps: int = typer.Option(50, help="DDIM steps (MetaEarth: 50)"),
    strength: Optional[float] = typer.Option(None, help=STRENGTH_HELP),
    device: Optional[str] = typer.Option(None, help="torch device, e.g. cpu"),
):
    """Generate one x4 image from a low-resolution condition (one stage)."""
    from affine import Affine

    from earthsynth.generate.cascade import upscale
    loaded, gsd = _condition(condition, condition_m)
    net = _model(model, device)
    from earthsynth.generate.tiles import TileConfig
    image = upscale(net, loaded.rgb_hw3, gsd, seed=seed, steps=steps, device=device, progress=True,
                    tile=TileConfig(strength=strength))
    scale = net.config.scale
    transform = loaded.transform @ Affine.scale(1.0 / scale) if loaded.transform is not None else None
    _save_image(out, image, transform, loaded.crs)
    console.print(f"{image.shape[1]}x{image.shape[0]} px at {gsd / scale:g} m/px -> {out}")


@generate_app.command("cascade")
@user_errors
def cascade_cmd(
    image: Path = typer.Argument(..., help="low-resolution RGB image: a raster, a map, any picture"),
    out: Path = typer.Option(..., "--out", help="folder for stage_<k>_<m>m.png and cascade.json"),
    input_m: Optional[float] = typer.Option(None, "--input-m", help="m/px of the input (default: geotransform)"),
    stages: int = typer.Option(2, help="number of x4 stages (e.g. 3: 256 -> 64 -> 16 -> 4 m/px)"),
    model: Optional[Path] = typer.Option(None, "--model", help=MODEL_HELP),
    seed: int = typer.Option(0, help="random seed"),
    steps: int = typer.Option(50, help="DDIM steps per stage"),
    strength: Optional[float] = typer.Option(None, help=STRENGTH_HELP),
    device: Optional[str] = typer.Option(None, help="torch device"),
):
    """Self-cascading generation: stage after stage of x4 super-resolution with resolution guidance."""
    from earthsynth.generate.cascade import cascade
    from earthsynth.generate.tiles import TileConfig
    from earthsynth.io.atomic import atomic_path
    loaded, gsd = _condition(image, input_m)
    results = cascade(_model(model, device), loaded.rgb_hw3, gsd, stages=stages, seed=seed, steps=steps,
                      device=device, progress=True, tile=TileConfig(strength=strength))
    listing = []
    for k, (pixels, m_per_px) in enumerate(results):
        path = out / f"stage_{k}_{m_per_px:g}m.png"
        _save_image(path, pixels)
        listing.append({"stage": k, "m_per_px": m_per_px, "path": path.name, "width": int(pixels.shape[1]),
                        "height": int(pixels.shape[0])})
        console.print(f"stage {k}: {pixels.shape[1]}x{pixels.shape[0]} px at {m_per_px:g} m/px -> {path}")
    with atomic_path(out / "cascade.json") as tmp:
        tmp.write_text(json.dumps({"input": str(image), "seed": seed, "steps": steps, "strength": strength,
                                   "stages": listing}, indent=2))


@generate_app.command("tiles")
@user_errors
def tiles_cmd(
    condition: Path = typer.Argument(..., help="condition raster (GeoTIFF: georeferencing is kept, refined x4)"),
    out: Path = typer.Option(..., "--out", help="output Cloud Optimised GeoTIFF"),
    condition_m: Optional[float] = typer.Option(None, "--condition-m", help="m/px of the condition"),
    model: Optional[Path] = typer.Option(None, "--model", help=MODEL_HELP),
    seed: int = typer.Option(0, help="random seed"),
    steps: int = typer.Option(50, help="DDIM steps"),
    window: Optional[int] = typer.Option(None, help="window side in output px (default: the model's)"),
    overlap: bool = typer.Option(True, "--overlap/--no-overlap", help="half-window overlap (MetaEarth)"),
    shared_noise: bool = typer.Option(True, "--shared-noise/--no-shared-noise",
                                      help="same initial noise in every window (MetaEarth)"),
    batch_windows: int = typer.Option(4, help="windows denoised together"),
    strength: Optional[float] = typer.Option(None, help=STRENGTH_HELP),
    no_resume: bool = typer.Option(False, "--no-resume", help="start over even if a partial run exists"),
    device: Optional[str] = typer.Option(None, help="torch device"),
):
    """Unbounded generation: sliding windows streamed into a georeferenced COG (resumable)."""
    from earthsynth.generate.tiles import TileConfig, generate_tiles
    config = TileConfig(window_px=window, overlap=overlap, shared_noise=shared_noise, steps=steps,
                        batch_windows=batch_windows, strength=strength)
    result = generate_tiles(_model(model, device), condition, out, condition_m=condition_m, seed=seed,
                            config=config, device=device, resume=not no_resume, progress=True)
    resumed = f", resumed after {result.bands_resumed} finished bands" if result.bands_resumed else ""
    console.print(f"{result.width}x{result.height} px at {result.resolution_m:g} m/px ({result.method}, "
                  f"{result.windows} windows{resumed}) in {result.seconds:.1f} s -> {out}")


@generate_app.command("mosaic")
@user_errors
def mosaic_cmd(
    image: Path = typer.Argument(..., help="low-resolution map (GeoTIFF with a geotransform, or any RGB picture "
                                           "with --input-m)"),
    out: Path = typer.Option(..., "--out", help="folder for stage_<k>.tif (COG), stage_<k>_preview.png, mosaic.json"),
    input_m: Optional[float] = typer.Option(None, "--input-m", help="m/px of the input (default: geotransform)"),
    stages: int = typer.Option(2, help="number of x4 stages"),
    crop: Optional[list[int]] = typer.Option(None, help="per stage: side (px) of the centred window of the "
                                             "previous stage to refine, 0 = all of it (repeat the option)"),
    model: Optional[Path] = typer.Option(None, "--model", help=MODEL_HELP),
    seed: int = typer.Option(0, help="random seed"),
    steps: int = typer.Option(50, help="DDIM steps per window"),
    strength: Optional[float] = typer.Option(None, help=STRENGTH_HELP),
    window: Optional[int] = typer.Option(None, help="window side in output px (default: the model's)"),
    batch_windows: int = typer.Option(4, help="windows denoised together"),
    preview_px: int = typer.Option(1024, help="longest side of the PNG previews"),
    device: Optional[str] = typer.Option(None, help="torch device"),
):
    """Cascaded unbounded mosaic: stage after stage of tiled x4 generation, each streamed to a COG (resumable)."""
    from earthsynth.generate.mosaic import MosaicConfig, cascade_mosaic
    from earthsynth.generate.tiles import TileConfig
    config = MosaicConfig(stages=stages, crops_px=tuple((c or None) for c in (crop or ())),
                          tile=TileConfig(window_px=window, steps=steps, strength=strength,
                                          batch_windows=batch_windows), preview_px=preview_px)
    results = cascade_mosaic(_model(model, device), image, out, condition_m=input_m, seed=seed, config=config,
                             device=device, progress=True, log=console.print)
    for s in results:
        console.print(f"stage {s.stage}: {s.width}x{s.height} px at {s.m_per_px:g} m/px -> {s.path} "
                      f"(preview {s.preview.name})", highlight=False)


@generate_app.command("augment")
@user_errors
def augment_cmd(
    src: Path = typer.Argument(..., help="folder of labelled tiles: <label>/<name>.png|tif"),
    out: Path = typer.Option(..., "--out", help="output folder (<label>/<name>_v<k>.png + labels.csv)"),
    variants: int = typer.Option(4, help="variants per tile (MetaEarth grows the set to 5x: 4)"),
    gsd_m: float = typer.Option(4.0, "--gsd-m", help="m/px of tiles without a geotransform"),
    model: Optional[Path] = typer.Option(None, "--model", help=MODEL_HELP),
    seed: int = typer.Option(0, help="random seed"),
    steps: int = typer.Option(50, help="DDIM steps"),
    device: Optional[str] = typer.Option(None, help="torch device"),
):
    """Data engine: downsample each labelled tile x4 and regenerate variants (resumable)."""
    from rich.progress import Progress

    from earthsynth.generate.augment import augment_folder
    net = _model(model, device)
    with Progress(console=console) as bar:
        task = bar.add_task("augment", total=None)
        result = augment_folder(net, src, out, variants=variants, seed=seed, gsd_m=gsd_m, steps=steps,
                                device=device, on_variant=lambda done, total: bar.update(task, completed=done,
                                                                                         total=total))
    console.print(f"{result.tiles} tiles: {result.written} variants written, {result.skipped} already there "
                  f"-> {result.labels_csv}")
