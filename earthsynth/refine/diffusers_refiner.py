"""A refiner around a user's own diffusers image-to-image pipeline, loaded from a local folder (never the hub).

    refiner = DiffusersImg2ImgRefiner("/models/sd-img2img", strength=0.35, num_inference_steps=28,
                                      prompt="Clear satellite image of an urban area ...", device=gpu)
    refined_bhw3 = refiner.refine(renders_bhw3, seed=0)

This is how a GPU user plugs a large open model (the kind Skyfall-GS uses) into the pipelines in place of the
small shipped FlowEdit model. diffusers has no FlowEdit pipeline, so the pipeline runs its own image-to-image
editing (SDEdit-style noising to `strength`, then its sampler). The folder is what `pipeline.save_pretrained`
writes (model_index.json + components); `AutoPipelineForImage2Image` picks the image-to-image variant of a
text-to-image folder, and any other pipeline whose __call__ takes `image` (and `strength`) is used as it is.
Text-conditioned pipelines need `transformers` installed.

Images are reflect-padded to the pipeline's size multiple (VAE factor x UNet down-sampling) and cropped back;
each image gets its own CPU generator seeded by (seed, index), so the same seed gives the same result.
"""

from __future__ import annotations

import inspect
from pathlib import Path

import torch
from torch.nn import functional as F

from earthsynth.errors import ConfigError, InputFileError
from earthsynth.refine.base import check_images
from earthsynth.refine.flow_checkpoint import step_seed

# Skyfall-GS supplementary B.1.4, target prompt
SKYFALL_TARGET_PROMPT = ("Clear satellite image of an urban area with sharp buildings, smooth edges, natural "
                         "lighting, and well-defined textures.")


def _load_pipeline(path: Path, torch_dtype):
    try:
        from diffusers import AutoPipelineForImage2Image, DiffusionPipeline
    except ImportError as exc:  # pragma: no cover - diffusers is a core dependency
        raise ConfigError(f"diffusers cannot be imported ({exc})") from None
    kwargs = {"local_files_only": True}
    if torch_dtype is not None:
        kwargs["torch_dtype"] = torch_dtype
    try:
        return AutoPipelineForImage2Image.from_pretrained(str(path), **kwargs)
    except ImportError as exc:
        raise InputFileError(f"the pipeline needs a package that is not installed ({exc})", path=path,
                             hint="text-conditioned pipelines need `pip install transformers`") from None
    except Exception:  # noqa: BLE001 - not a family AutoPipeline maps (or broken): the folder's own class says
        pass
    try:
        return DiffusionPipeline.from_pretrained(str(path), **kwargs)
    except ImportError as exc:
        raise InputFileError(f"the pipeline needs a package that is not installed ({exc})", path=path,
                             hint="text-conditioned pipelines need `pip install transformers`") from None
    except Exception as exc:  # diffusers / hub raise many types for broken folders
        raise InputFileError(f"not a loadable diffusers pipeline ({type(exc).__name__}: {str(exc)[:300]})",
                             path=path, hint="point at a folder written by pipeline.save_pretrained") from None


def _size_multiple(pipe) -> int:
    vae_factor = int(getattr(pipe, "vae_scale_factor", 8) or 8)
    unet = getattr(pipe, "unet", None)
    if unet is not None and hasattr(unet.config, "block_out_channels"):
        return vae_factor * 2 ** (len(unet.config.block_out_channels) - 1)
    return vae_factor * 2   # transformer pipelines (FLUX, SD3) pack 2x2 latent patches


class DiffusersImg2ImgRefiner:
    """Refiner protocol around `AutoPipelineForImage2Image.from_pretrained(path, local_files_only=True)`."""

    name = "diffusers-img2img"

    def __init__(self, path: str | Path, *, strength: float = 0.35, num_inference_steps: int = 28,
                 prompt: str | None = None, device: torch.device | str | None = None,
                 torch_dtype: torch.dtype | None = None, extra_kwargs: dict | None = None):
        path = Path(path).expanduser()
        if not path.is_dir():
            raise InputFileError("no diffusers pipeline folder here", path=path,
                                 hint="give the local folder written by pipeline.save_pretrained (nothing is "
                                      "downloaded)")
        if not (path / "model_index.json").is_file():
            raise InputFileError("not a diffusers pipeline folder (no model_index.json)", path=path,
                                 hint="give the folder written by pipeline.save_pretrained")
        if not 0.0 < float(strength) <= 1.0:
            raise ConfigError(f"strength must be in (0, 1], got {strength}")
        if not isinstance(num_inference_steps, int) or num_inference_steps < 1:
            raise ConfigError(f"num_inference_steps must be a positive integer, got {num_inference_steps!r}")
        self.path, self.strength, self.num_inference_steps = path, float(strength), num_inference_steps
        self.pipe = _load_pipeline(path, torch_dtype).to(torch.device(device or "cpu"))
        self.device = torch.device(device or "cpu")
        params = inspect.signature(self.pipe.__call__).parameters
        if "image" not in params:
            raise InputFileError(f"{type(self.pipe).__name__} takes no input image: not an image-to-image pipeline",
                                 path=path, hint="use an img2img-capable pipeline folder")
        self._params = params
        self.prompt = prompt if prompt is not None else SKYFALL_TARGET_PROMPT
        self.extra_kwargs = dict(extra_kwargs or {})
        self.multiple = _size_multiple(self.pipe)

    def _call_kwargs(self, batch: int, seed: int, start: int) -> dict:
        wanted = {"strength": self.strength, "num_inference_steps": self.num_inference_steps,
                  "output_type": "pt", "prompt": [self.prompt] * batch,
                  "generator": [torch.Generator().manual_seed(step_seed(seed, start + i)) for i in range(batch)]}
        kwargs = {k: v for k, v in wanted.items() if k in self._params}
        kwargs.update(self.extra_kwargs)
        return kwargs

    @torch.no_grad()
    def refine(self, images_bhw3: torch.Tensor, *, seed: int = 0, batch_size: int = 4) -> torch.Tensor:
        images = check_images(images_bhw3)
        if images.shape[0] == 0:
            return images.clone()
        if float(images.min()) < 0.0 or float(images.max()) > 1.0:
            raise ConfigError("images must be in [0, 1]", hint="divide uint8 images by 255")
        x = images.to(torch.float32).permute(0, 3, 1, 2).cpu()
        h, w = x.shape[-2:]
        pad_h, pad_w = -h % self.multiple, -w % self.multiple
        if pad_h or pad_w:
            mode = "reflect" if pad_h < h and pad_w < w else "replicate"
            x = F.pad(x, (0, pad_w, 0, pad_h), mode=mode)
        outs = []
        for start in range(0, x.shape[0], batch_size):
            chunk = x[start: start + batch_size]
            result = self.pipe(image=chunk, **self._call_kwargs(chunk.shape[0], seed, start))
            out = result.images if hasattr(result, "images") else result[0]
            out = torch.as_tensor(out)
            if out.ndim == 4 and out.shape[-1] == 3 and out.shape[1] != 3:
                out = out.permute(0, 3, 1, 2)   # numpy-style output of some pipelines
            if tuple(out.shape[-2:]) != tuple(chunk.shape[-2:]):
                raise ConfigError(f"the pipeline returned {tuple(out.shape[-2:])} px for {tuple(chunk.shape[-2:])} "
                                  f"px inputs", hint="pass height / width through extra_kwargs")
            outs.append(out.float().cpu())
        out = torch.cat(outs)[..., :h, :w].clamp(0.0, 1.0).permute(0, 2, 3, 1)
        return out.to(images.device, images.dtype)
