"""benchmarks/splat_raster.py: the sort-and-scatter peer renders and differentiates like the dense reference and
ours (the benchmark's speed-up means nothing otherwise), and --issue's rows have the issue's shape."""

import functools
import importlib.util
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
NAMES = ("means", "quats", "scales", "opacities", "colors")


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("splat_raster", REPO / "benchmarks" / "splat_raster.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["splat_raster"] = module
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop("splat_raster", None)


@pytest.mark.parametrize("kind", ["cloud", "issue"])
def test_sort_scatter_matches_dense_and_ours(bench, kind):
    # "issue": 1 px Gaussians piled ~20 deep, so pixels hit the T <= 1e-4 stop and the 0.999 alpha clamp
    n, size, sh_degree = (400, 32, None) if kind == "cloud" else (3000, 24, 0)
    inputs = bench.scene(n, size) if kind == "cloud" else bench.issue_scene(n, size, seed=3)
    renders = [functools.partial(r, sh_degree=sh_degree)
               for r in (bench.dense_reference, bench.sort_scatter_rasterize, bench.ours)]
    with torch.no_grad():
        (ref, ref_alpha), (img, alpha), (our_img, _) = [r(*inputs, size) for r in renders]
    if kind == "issue":
        assert float(ref_alpha.max()) > 0.999 and float(ref_alpha.min()) > 0.5
    assert float(ref_alpha.mean()) > 0.3  # a scene that is mostly covered, so the check is not vacuous
    assert torch.allclose(img, ref, atol=1e-5) and torch.allclose(alpha, ref_alpha, atol=1e-5)
    assert float((img - our_img).abs().max()) <= 1e-4
    ref_grads, grads = bench.gradients(renders[0], inputs, size), bench.gradients(renders[1], inputs, size)
    for name, g, r in zip(NAMES, grads, ref_grads):
        assert float(r.abs().max()) > 0, name
        assert float((g - r).abs().max()) <= 1e-4 * float(r.abs().max()), name


def test_box_pairs_cover_exactly_the_clipped_boxes(bench):
    means2d = torch.tensor([[0.2, 0.7], [5.5, 3.5], [9.9, 9.9]])
    radii = torch.tensor([[2.0, 1.0], [1.0, 2.0], [3.0, 3.0]])
    pix, xy, gid = bench._box_pairs(means2d, radii, 8)
    assert torch.equal(pix, xy[:, 1] * 8 + xy[:, 0])
    for i in range(3):
        got = {tuple(p) for p in xy[gid == i].tolist()}
        want = {(x, y) for x in range(8) for y in range(8)
                if abs(x + 0.5 - means2d[i, 0]) <= radii[i, 0] and abs(y + 0.5 - means2d[i, 1]) <= radii[i, 1]}
        assert got == want and len(got) == int((gid == i).sum()), i


def test_issue_rows_shape_and_dense_skip(bench, monkeypatch):
    monkeypatch.setattr(bench, "ISSUE_SIZE", 32)
    monkeypatch.setattr(bench, "DENSE_BUDGET_BYTES", 200 * 32 * 32 * 4 * 12)  # dense fits at 200, not at 400
    rows = bench.issue_rows((200, 400), threads=1, repeats=1)
    timed = [(r["backend"], r["n"]) for r in rows if "seconds" in r]
    assert timed == [("ours", 200), ("dense", 200), ("sort_scatter", 200), ("ours", 400), ("sort_scatter", 400)]
    assert {"backend": "dense", "n": 400, "size": 32, "sh_degree": 0, "threads": 1, "skipped": "memory"} in rows
    assert all(r["seconds"] > 0 and r["size"] == 32 for r in rows if "seconds" in r)
    assert all(r["max_diff"] <= 1e-4 for r in rows if r.get("backend") == "sort_scatter")
    summary = rows[-1]
    speedups = summary["speedup_vs_sort_scatter"]
    assert set(speedups) == {"200", "400"} and all(s > 0 for s in speedups.values())
    assert summary["goal_3x"] == all(s >= 3.0 for s in speedups.values())
