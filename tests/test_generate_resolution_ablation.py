"""The resolution-guidance ablation: the switch in DenoiserConfig / the model, and benchmarks/resolution_ablation.py."""

import importlib.util
import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from earthsynth.errors import ConfigError
from earthsynth.generate.config import DenoiserConfig
from earthsynth.generate.model import MetaEarthDenoiser

REPO = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("one_torch_thread")   # timings stay sane on 2 cores


def _eps_at(model: MetaEarthDenoiser, resolution_m: float) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 16, 16, generator=g)
    cond = torch.rand(2, 3, 4, 4, generator=g) * 2 - 1
    with torch.no_grad():
        return model(x, torch.tensor([10, 500]), cond, resolution_m)


@pytest.mark.parametrize("guidance", [True, False])
def test_output_depends_on_resolution_only_with_guidance(guidance):
    torch.manual_seed(0)
    model = MetaEarthDenoiser(replace(DenoiserConfig.tiny(), resolution_guidance=guidance)).eval()
    at_1m, at_64m = _eps_at(model, 1.0), _eps_at(model, 64.0)
    if guidance:
        assert (at_1m - at_64m).abs().max() > 1e-4
    else:
        assert torch.equal(at_1m, at_64m)
        assert torch.count_nonzero(model.embed_resolution(4.0, 3)) == 0
        with pytest.raises(ConfigError):          # the GSD is still validated without the branch
            model.embed_resolution(-1.0, 1)


def test_ablated_model_keeps_the_state_dict_layout_and_round_trips(tmp_path):
    torch.manual_seed(0)
    config = replace(DenoiserConfig.tiny(), resolution_guidance=False)
    ablated, full = MetaEarthDenoiser(config), MetaEarthDenoiser(DenoiserConfig.tiny())
    assert {k: v.shape for k, v in ablated.state_dict().items()} == {k: v.shape for k, v in full.state_dict().items()}
    loaded = MetaEarthDenoiser.from_pretrained(ablated.save_pretrained(tmp_path / "m"))
    assert loaded.config.resolution_guidance is False
    assert torch.equal(_eps_at(loaded, 2.0), _eps_at(ablated.eval(), 2.0))


def test_config_round_trip_and_old_configs():
    config = replace(DenoiserConfig.tiny(), resolution_guidance=False)
    data = config.to_dict()
    assert data["resolution_guidance"] is False
    assert DenoiserConfig.from_dict(data) == config
    assert DenoiserConfig.from_json(config.to_json()) == config
    del data["resolution_guidance"]                  # a config saved before the field existed
    assert DenoiserConfig.from_dict(data).resolution_guidance is True
    with pytest.raises(ConfigError, match="resolution_guidance"):
        DenoiserConfig.from_dict({**data, "resolution_guidance": "no"})


def _benchmark():
    spec = importlib.util.spec_from_file_location("resolution_ablation", REPO / "benchmarks" / "resolution_ablation.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_benchmark_runs_end_to_end_and_resumes(tmp_path, capsys):
    bench = _benchmark()
    argv = ["--steps", "2", "--size", "16", "--batch", "2", "--model-size", "tiny", "--data", "procedural",
            "--levels", "4", "16", "--per-level", "2", "--swap-count", "1", "--ddim-steps", "2",
            "--out", str(tmp_path)]
    lines = bench.main(argv)
    printed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert printed == lines
    scores = [line for line in lines if "fid_proxy" in line]
    assert {(line["model"], line["gsd_m"]) for line in scores} == {
        (m, g) for m in ("bicubic_reference", "with_resolution", "without_resolution") for g in (4.0, 16.0, "all")}
    for line in scores:
        assert line["features"] == "proxy-randconv-v1" and line["n"] == (4 if line["gsd_m"] == "all" else 2)
        assert all(isinstance(line[k], float) for k in ("fid_proxy", "kid_proxy", "psnr_vs_hr"))
    assert {line["train_steps"] for line in scores if line["model"] != "bicubic_reference"} == {2}
    swaps = {(line["model"], line["gsd_m"]): line for line in lines if line.get("eval") == "stated_resolution"}
    assert set(swaps) == {(m, g) for m in ("with_resolution", "without_resolution") for g in (4.0, 16.0)}
    assert swaps["without_resolution", 4.0]["stated_gsd_m"] == 16.0
    for gsd in (4.0, 16.0):
        assert swaps["without_resolution", gsd]["max_abs_diff"] == 0.0          # no branch: r cannot matter
        assert swaps["with_resolution", gsd]["mean_abs_diff"] > 0.0
    for name in ("with_resolution", "without_resolution"):
        saved = json.loads((tmp_path / name / "model" / "config.json").read_text())
        assert saved["denoiser"]["resolution_guidance"] is (name == "with_resolution")
    # a rerun with a larger budget continues the two run folders instead of starting over
    more = bench.main([*argv[:1], "3", *argv[2:]])
    assert {line["train_steps"] for line in more if line.get("model") == "with_resolution" and "n" in line
            and "fid_proxy" in line} == {3}
    assert (tmp_path / "with_resolution" / "checkpoints" / "step_000003").is_dir()
