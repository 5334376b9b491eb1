"""Unbounded sliding-window generation: geometry, georeferencing, the noise constraint, seams, memory, resume."""

import tracemalloc

import numpy as np
import pytest
import torch
from affine import Affine
from torch.nn import functional as F

from earthsynth.errors import ConfigError
from earthsynth.generate.config import DenoiserConfig
from earthsynth.generate.model import MetaEarthDenoiser
from earthsynth.generate.schedule import alphas_cumprod
from earthsynth.generate.tiles import (TileConfig, axis_weights, field_window_noise, generate_array, generate_tiles,
                                       make_grid, shared_window_noise)
from earthsynth.io.raster import StreamingRasterWriter, raster_info, read_raster
from earthsynth.metrics.seams import seam_ratio
from earthsynth.world.landscape import landscape_tile

CRS = "EPSG:32633"
TRANSFORM = Affine(16.0, 0.0, 500_000.0, 0.0, -16.0, 4_000_000.0)


pytestmark = pytest.mark.usefixtures("one_torch_thread")   # timings stay sane on 2 cores


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return MetaEarthDenoiser(DenoiserConfig.tiny()).eval()   # 16 px windows, x4


@pytest.fixture(scope="module")
def condition():
    rgb, _ = landscape_tile(0, x0=1000.0, y0=2000.0, width_px=12, height_px=10, gsd=16.0)
    return rgb     # (10, 12, 3) uint8 at 16 m/px -> output 40 x 48 at 4 m/px


_ALPHA_BAR = alphas_cumprod().float()


class SmoothOracle(MetaEarthDenoiser):
    """A denoiser with known behaviour for the seam test: it predicts x0 = half the bilinear-upsampled condition
    + a zero-padded 5x5 local mean of x_t, so its output depends on the condition and on low frequencies of the
    initial noise, and has border effects at window edges, as a trained model does (a random tiny model
    outputs near-white noise, whose seams cannot be told from its interior)."""

    def encode_condition(self, condition_lr):
        return F.interpolate(condition_lr, scale_factor=self.config.scale, mode="bilinear", align_corners=False)

    def denoise(self, noisy_x, timesteps, condition_features, resolution_embedding):
        abar = _ALPHA_BAR[int(timesteps)]
        x0 = 0.5 * condition_features + F.avg_pool2d(noisy_x, 5, 1, 2)
        return (noisy_x - abar.sqrt() * x0) / (1 - abar).sqrt()


def test_grid_weights_and_shared_noise(model):
    grid = make_grid(model, 10, 12, TileConfig())
    assert (grid.window, grid.stride, grid.out_h, grid.out_w) == (16, 8, 40, 48)
    assert grid.padded_h >= 40 and grid.padded_w >= 48 and grid.bands == 5
    total = np.zeros(grid.padded_w)
    for j in range(grid.cols):                       # the blend weights are a partition of unity
        total[j * 8: j * 8 + 16] += axis_weights(j, grid.cols, 16, 8)
    np.testing.assert_allclose(total, 1.0, atol=1e-6)
    noise = shared_window_noise(3, grid, seed=5)     # the paper's overlap conditions hold for the shared x_T
    assert torch.equal(noise[:, 8:], noise[:, :8]) and torch.equal(noise[:, :, 8:], noise[:, :, :8])
    # the default noise field: neighbours share their overlap's noise exactly, and the field does not repeat
    w = {(r, c): field_window_noise(3, grid, 5, r, c) for r in range(3) for c in range(3)}
    assert torch.equal(w[0, 0][:, :, 8:], w[0, 1][:, :, :8]) and torch.equal(w[0, 0][:, 8:], w[1, 0][:, :8])
    assert torch.equal(w[0, 0][:, 8:, 8:], w[1, 1][:, :8, :8])
    assert not torch.equal(w[0, 0][:, :, :8], w[0, 0][:, :, 8:]) and not torch.equal(w[0, 0], w[0, 2])
    with pytest.raises(ConfigError, match="noise_layout"):
        TileConfig(noise_layout="tiled")
    assert make_grid(model, 10, 12, TileConfig(overlap=False)).stride == 16
    with pytest.raises(ConfigError, match="window_px"):
        make_grid(model, 10, 12, TileConfig(window_px=12))
    assert TileConfig(overlap=False, shared_noise=False).method == "naive"


def test_tiled_cog_shape_georeferencing_and_determinism(model, condition, tmp_path):
    config = TileConfig(steps=2)
    result = generate_tiles(model, condition, tmp_path / "hr.tif", condition_m=16.0, transform=TRANSFORM, crs=CRS,
                            seed=3, config=config)
    info = raster_info(tmp_path / "hr.tif")
    assert (info.width, info.height, info.count, info.dtype) == (48, 40, 3, "uint8")
    assert info.crs == CRS and info.layout == "COG"
    assert info.transform.almost_equals(Affine(4.0, 0.0, 500_000.0, 0.0, -4.0, 4_000_000.0))
    assert result.resolution_m == 4.0 and result.method == "overlap+noise"
    assert not (tmp_path / "hr.tif.parts.tmp").exists()         # work folder cleaned up
    in_memory = generate_array(model, condition, 4.0, seed=3, config=config)
    np.testing.assert_array_equal(read_raster(tmp_path / "hr.tif").data, in_memory)
    again = generate_array(model, condition, 4.0, seed=3, config=config)
    other = generate_array(model, condition, 4.0, seed=4, config=config)
    assert again.tobytes() == in_memory.tobytes() and not np.array_equal(other, in_memory)


def test_overlap_and_shared_noise_lower_the_seam_ratio(condition):
    torch.manual_seed(0)
    oracle = SmoothOracle(DenoiserConfig.tiny()).eval()
    big, _ = landscape_tile(0, x0=1000.0, y0=2000.0, width_px=24, height_px=20, gsd=16.0)
    ratios = {}
    for overlap, shared, layout in ((False, False, "field"), (True, False, "field"), (True, True, "field"),
                                    (True, True, "periodic")):
        config = TileConfig(overlap=overlap, shared_noise=shared, noise_layout=layout, steps=4)
        image = np.moveaxis(generate_array(oracle, big, 4.0, seed=0, config=config), 0, -1)
        grid = make_grid(oracle, 20, 24, config)
        ratios[config.method, layout] = seam_ratio(image.astype(np.float64), grid.stride)["ratio"]
    assert ratios["naive", "field"] > 1.5                         # naive tiling shows its seams
    # blending windows that disagree smooths across their borders (ratio < 1: a soft band, visible too); windows
    # that share their overlap's noise agree, so the seams look like the interior (ratio nearer 1)
    for layout in ("field", "periodic"):
        assert ratios["overlap+noise", layout] < 0.6 * ratios["naive", "field"]
        assert abs(ratios["overlap+noise", layout] - 1) < abs(ratios["overlap", "field"] - 1)


def _peak_traced_bytes(oracle, cond, path, config) -> int:
    tracemalloc.start()
    generate_tiles(oracle, cond, path, condition_m=8.0, config=config)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak


def test_large_output_streams_bands_not_the_whole_image(tmp_path, monkeypatch):
    torch.manual_seed(0)
    oracle = SmoothOracle(DenoiserConfig.tiny()).eval()
    rng = np.random.default_rng(0)
    written = []
    original = StreamingRasterWriter.write_window
    monkeypatch.setattr(StreamingRasterWriter, "write_window",
                        lambda self, r, c, data: (written.append(np.shape(data)), original(self, r, c, data))[1])
    config = TileConfig(window_px=64, steps=1, batch_windows=8)
    small = _peak_traced_bytes(oracle, rng.integers(0, 256, (64, 32, 3), dtype=np.uint8), tmp_path / "a.tif",
                               config)
    written.clear()
    large = _peak_traced_bytes(oracle, rng.integers(0, 256, (256, 32, 3), dtype=np.uint8), tmp_path / "b.tif",
                               config)
    assert max(shape[1] for shape in written) <= 32       # one band of half-window rows per write
    assert sum(shape[1] for shape in written) == 1024
    growth_uint8 = 3 * (1024 - 256) * 128                   # bytes the finished image grew by
    # what grows is the condition (float32, 1/16 of the pixels: 1/4 of the uint8 growth), not the image
    assert large - small < 0.4 * growth_uint8, f"peak {small / 1e6:.2f} -> {large / 1e6:.2f} MB"


def test_resume_after_a_crash_gives_the_same_bytes(model, condition, tmp_path):
    config = TileConfig(steps=2, batch_windows=3)
    kwargs = dict(condition_m=16.0, transform=TRANSFORM, crs=CRS, seed=1, config=config)
    generate_tiles(model, condition, tmp_path / "once.tif", **kwargs)

    def crash(band, bands):
        if band == 2:
            raise KeyboardInterrupt("killed")
    with pytest.raises(KeyboardInterrupt):
        generate_tiles(model, condition, tmp_path / "resumed.tif", on_band=crash, **kwargs)
    assert not (tmp_path / "resumed.tif").exists()
    assert sorted(p.name for p in (tmp_path / "resumed.tif.parts.tmp").glob("band_*")) == [
        "band_000000.npy", "band_000001.npy", "band_000002.npy"]
    with pytest.raises(ConfigError, match="another model, condition"):
        generate_tiles(model, condition, tmp_path / "resumed.tif", **{**kwargs, "seed": 2})
    seen = []
    result = generate_tiles(model, condition, tmp_path / "resumed.tif", on_band=lambda b, n: seen.append(b),
                            **kwargs)
    assert result.bands_resumed == 3 and seen == [3, 4]
    assert (tmp_path / "resumed.tif").read_bytes() == (tmp_path / "once.tif").read_bytes()


def test_path_condition_and_errors(model, condition, tmp_path):
    from earthsynth.io.raster import write_raster
    write_raster(tmp_path / "cond.tif", np.moveaxis(condition, -1, 0), transform=TRANSFORM, crs=CRS)
    result = generate_tiles(model, tmp_path / "cond.tif", tmp_path / "hr.tif", config=TileConfig(steps=1))
    assert result.resolution_m == pytest.approx(4.0) and raster_info(tmp_path / "hr.tif").crs == CRS
    with pytest.raises(ConfigError, match="condition_m"):
        generate_tiles(model, condition, tmp_path / "x.tif", config=TileConfig(steps=1))
    with pytest.raises(ConfigError, match="steps"):
        TileConfig(steps=0)
