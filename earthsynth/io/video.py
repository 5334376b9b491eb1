"""MP4 output (H.264 through the ffmpeg binary that imageio-ffmpeg ships: no system ffmpeg needed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from earthsynth.errors import ConfigError
from earthsynth.io.atomic import atomic_path


def write_mp4(path, frames_bhw3, *, fps: int = 24) -> Path:
    """uint8 frames (B, H, W, 3), H and W even (H.264 with yuv420p) -> an MP4 that browsers and ffprobe open."""
    import imageio_ffmpeg

    frames = np.asarray(frames_bhw3)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8 or len(frames) == 0:
        raise ConfigError(f"frames must be a non-empty uint8 (B, H, W, 3) array, got {frames.dtype} {frames.shape}")
    h, w = frames.shape[1:3]
    if h % 2 or w % 2:
        raise ConfigError(f"frame size must be even for H.264 (yuv420p), got {w}x{h}")
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp_mp4 = tmp.with_suffix(".mp4")
        writer = imageio_ffmpeg.write_frames(str(tmp_mp4), (w, h), fps=fps, codec="libx264",
                                             pix_fmt_out="yuv420p", macro_block_size=1,
                                             output_params=["-movflags", "+faststart"])
        writer.send(None)
        for frame in frames:
            writer.send(np.ascontiguousarray(frame))
        writer.close()
        tmp_mp4.replace(tmp)
    return path
