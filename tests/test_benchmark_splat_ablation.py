"""benchmarks/splat_ablation.py at a toy budget on the tiny scene: rows, the shared satellite stage, the
random-order curriculum, resuming from results.jsonl and refusing an out folder made with other settings."""

import importlib.util
import json
import shutil
import sys
from pathlib import Path

import pytest
import torch

from earthsynth.errors import ConfigError

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]
ARGS = ["--size", "80", "--steps", "12", "--episodes", "2", "--episode-steps", "6", "--opacity-weight", "0.1",
        "--variants", "recon", "recon_no_depth", "idu", "idu_random_views"]


@pytest.fixture()
def bench(monkeypatch):
    spec = importlib.util.spec_from_file_location("splat_ablation", REPO / "benchmarks" / "splat_ablation.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "splat_ablation", module)     # dataclasses look their module up
    spec.loader.exec_module(module)
    monkeypatch.setattr(module, "RECON", {"image_scale": 0.25, "max_init_points": 3000})
    monkeypatch.setattr(module, "IDU_VIEWS", {"look_at_grid": (1, 1), "views_per_point": 2, "size_px": 32})
    return module


def _lines(capsys) -> list[dict]:
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def test_random_order_is_never_sky_to_ground(bench):
    for episodes in (2, 3, 5):
        for seed in range(5):
            order = bench.random_order(episodes, seed)
            assert sorted(order) == list(range(episodes)) and order != tuple(range(episodes))


def test_splat_ablation_toy_run(bench, tiny_scene, tiny_scene_points, tmp_path, capsys):
    out = tmp_path / "bench"
    shutil.copytree(tiny_scene, out / "scene")                 # the benchmark reuses a scene and MVS it finds
    shutil.copytree(tiny_scene_points.parent, out / "dsm")
    bench.main(["--out", str(out), *ARGS])
    lines = _lines(capsys)
    rows = {row["variant"]: row for row in lines if "variant" in row}
    assert list(rows) == ["recon", "recon_no_depth", "idu_ep0", "idu_ep1", "idu", "idu_random_views"]
    for row in rows.values():
        assert 0 < row["psnr_low"] < 60 and 0 < row["ssim_low"] <= 1 and row["num_gaussians"] > 0
    assert rows["recon_no_depth"]["differs"] == {"reconstruct.weights.depth": 0.0}
    assert rows["idu_random_views"]["differs"] == {"idu.curriculum.order": [1, 0]}
    runs = out / "runs"
    elevations = {name: [json.loads((runs / name / f"idu/episode_{e}/episode.json").read_text())["elevation_deg"]
                         for e in range(2)] for name in ("idu", "idu_random_views")}
    assert elevations == {"idu": [85.0, 45.0], "idu_random_views": [45.0, 85.0]}

    def state(name):
        return torch.load(runs / name / "reconstruct" / "state.pt", weights_only=True)["params"]["means"]
    assert torch.equal(state("idu"), state("recon"))            # same satellite-stage config: shared
    assert not torch.equal(state("recon_no_depth"), state("recon"))
    summary = lines[-1]
    assert summary["delta_psnr"]["recon_no_depth"] == pytest.approx(
        rows["recon_no_depth"]["psnr_low"] - rows["recon"]["psnr_low"], abs=1e-6)
    assert isinstance(summary["idu_beats_recon"], bool)

    shutil.rmtree(runs)                                         # a rerun prints the finished rows, runs nothing
    bench.main(["--out", str(out), *ARGS])
    assert _lines(capsys) == lines and not runs.exists()
    with pytest.raises(ConfigError, match="other settings"):
        bench.main(["--out", str(out), *ARGS, "--seed", "1"])
