"""The default MetaEarth weights that ship inside the package.

    model = load_default_model()                  # earthsynth/weights/metaearth/, float32, eval mode

The folder holds `config.json` + `model.safetensors` (float16, to fit the project's weight budget; the tensors
are cast to float32 on load). How they were made: earthsynth/weights/metaearth/RECIPE.md.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from earthsynth.io.training import model_folder_exists, require_model_folder

DEFAULT_WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "weights" / "metaearth"


def default_weights_available(directory: str | Path = DEFAULT_WEIGHTS_DIR) -> bool:
    return model_folder_exists(directory)


def default_weights_info(directory: str | Path = DEFAULT_WEIGHTS_DIR) -> dict:
    """The "training" entry of the shipped config.json (step, checkpoint, dtype), or {} if absent."""
    path = Path(directory) / "config.json"
    try:
        return dict(json.loads(path.read_text()).get("training", {}))
    except (OSError, ValueError, AttributeError):
        return {}


def load_default_model(device: torch.device | str | None = None, *, directory: str | Path | None = None):
    """The shipped MetaEarth denoiser (float32, eval mode) on `device` (default CPU)."""
    from earthsynth.generate.model import MetaEarthDenoiser
    directory = require_model_folder(
        directory if directory is not None else DEFAULT_WEIGHTS_DIR,
        "the default MetaEarth weights are not there yet (config.json + model.safetensors)",
        hint="train and export them: scripts/train_metaearth_default.sh start, then "
             "scripts/train_metaearth_default.sh export; or pass a model folder (--model) explicitly")
    model = MetaEarthDenoiser.from_pretrained(directory, device=device)
    return model.float()


def load_default_or_tiny(kind: str = "auto", device: torch.device | str | None = None):
    """(model, description) for benchmarks and demos: kind "default" (the shipped weights), "tiny" (an untrained
    `DenoiserConfig.tiny()` model, seed 0) or "auto" (the shipped weights if present, else tiny)."""
    if kind not in ("auto", "default", "tiny"):
        from earthsynth.errors import ConfigError
        raise ConfigError(f"model kind must be auto, default or tiny, got {kind!r}")
    if kind == "default" or (kind == "auto" and default_weights_available()):
        info = default_weights_info()
        return load_default_model(device), f"default weights (step {info.get('step', '?')})"
    from earthsynth.generate.config import DenoiserConfig
    from earthsynth.generate.model import MetaEarthDenoiser
    torch.manual_seed(0)
    return MetaEarthDenoiser(DenoiserConfig.tiny()).to(device or "cpu").eval(), "tiny random model (seed 0, untrained)"
