"""The shared training plumbing (earthsynth.io.training): EMA warm-up, optimiser state files, checkpoint folders,
model folders and the entry-point helpers."""

from __future__ import annotations

import json
import math
import stat

import pytest
import torch
from safetensors.torch import load_file, save_file

from earthsynth.errors import ConfigError, InputFileError
from earthsynth.io import training
from earthsynth.io.training import EMA, find_checkpoint, read_checkpoint, write_checkpoint


class _Net(torch.nn.Module):
    def __init__(self, seed: int = 0, *, int_buffer: bool = False):
        super().__init__()
        torch.manual_seed(seed)
        self.lin = torch.nn.Linear(3, 2)
        if int_buffer:
            self.register_buffer("count", torch.tensor(7, dtype=torch.long))


def _adam_steps(model, optimizer, steps: int, start: int = 0) -> None:
    for k in range(start, start + steps):
        x = torch.randn(4, 3, generator=torch.Generator().manual_seed(k))
        optimizer.zero_grad()
        model.lin(x).square().mean().backward()
        optimizer.step()


# ---------------------------------------------------------------------------------------------------------------
# EMA
# ---------------------------------------------------------------------------------------------------------------

def test_ema_warm_up_matches_its_closed_form():
    # weights held at v after starting at w0: shadow_n = v + (w0 - v) prod_{k=1..n} d_k, and while the warm-up
    # rules, d_k = (1 + k) / (10 + k), so prod = 10! (n + 1)! / (n + 10)!
    model = _Net().double()
    w0 = model.lin.weight.detach().clone()
    ema = EMA(model, decay=0.9999)
    with torch.no_grad():
        model.lin.weight.fill_(2.0)
    n = 25
    for step in range(1, n + 1):
        ema.update(model, step)
    prod = math.factorial(10) * math.factorial(n + 1) / math.factorial(n + 10)
    assert torch.allclose(ema.shadow["lin.weight"], 2.0 + (w0 - 2.0) * prod, rtol=0, atol=1e-12)
    assert training.ema_decay_at(0.9999, 1) == pytest.approx(2 / 11)
    assert training.ema_decay_at(0.5, 100) == 0.5          # the decay caps the warm-up


def test_ema_keeps_floating_point_entries_unless_asked_for_all():
    model = _Net(int_buffer=True)
    assert set(EMA(model, 0.9).shadow) == {"lin.weight", "lin.bias"}
    assert set(EMA(_Net(), 0.9, floating_only=False).shadow) == {"lin.weight", "lin.bias"}
    assert "count" in EMA(model, 0.9, floating_only=False).shadow


# ---------------------------------------------------------------------------------------------------------------
# optimiser state
# ---------------------------------------------------------------------------------------------------------------

def test_optimizer_state_round_trip_gives_identical_next_steps(tmp_path):
    a = _Net()
    opt_a = torch.optim.AdamW(a.parameters(), lr=1e-2)
    _adam_steps(a, opt_a, 3)
    tensors, meta = training.flatten_optimizer_state(opt_a)
    save_file(tensors, str(tmp_path / "opt.safetensors"))
    (tmp_path / "opt.json").write_text(json.dumps(meta))

    def restored(load: bool):
        b = _Net(seed=1)
        b.load_state_dict(a.state_dict())
        opt_b = torch.optim.AdamW(b.parameters(), lr=1e-2)
        if load:
            opt_b.load_state_dict(training.unflatten_optimizer_state(
                load_file(str(tmp_path / "opt.safetensors")), json.loads((tmp_path / "opt.json").read_text())))
        return b, opt_b

    b, opt_b = restored(load=True)
    fresh, opt_fresh = restored(load=False)
    for model, opt in ((a, opt_a), (b, opt_b), (fresh, opt_fresh)):
        _adam_steps(model, opt, 2, start=3)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert not torch.equal(a.lin.weight, fresh.lin.weight)   # without the moments the steps differ


# ---------------------------------------------------------------------------------------------------------------
# checkpoint folders
# ---------------------------------------------------------------------------------------------------------------

def _checkpoint(tmp_path, step: int, keep: int = 2):
    model = _Net(seed=step)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    _adam_steps(model, optimizer, 1)
    return write_checkpoint(tmp_path, step, keep=keep, model=model, ema=EMA(model, 0.9), optimizer=optimizer,
                            state={"config": {"lr": 0.01}}, extra_optimizer_tensors={"rng": torch.arange(3)})


def test_rotation_latest_and_newest_complete(tmp_path):
    for step in range(1, 5):
        _checkpoint(tmp_path, step)
    root = tmp_path / "checkpoints"
    assert sorted(p.name for p in root.glob("step_*")) == ["step_000003", "step_000004"]
    assert (root / "latest").read_text() == "step_000004\n"
    assert find_checkpoint(tmp_path) == root / "step_000004"
    # a kill during the write of step 5: its files sit under a temporary name, or a folder lacks state.json
    (root / ".earthsynth-tmp-step_000005-dead").mkdir()
    (root / "step_000006").mkdir()
    (root / "step_000006" / "model.safetensors").write_bytes(b"torn")
    assert find_checkpoint(tmp_path) == root / "step_000004"
    (root / "latest").write_text("step_000006\n")               # latest naming an incomplete folder
    assert find_checkpoint(tmp_path) == root / "step_000004"
    (root / "latest").unlink()
    assert find_checkpoint(tmp_path) == root / "step_000004"
    assert find_checkpoint(tmp_path / "nothing") is None


def test_read_checkpoint_restores_everything_and_names_a_corrupt_one(tmp_path):
    path = _checkpoint(tmp_path, 7)
    assert json.loads((path / "state.json").read_text()) == {"step": 7, "config": {"lr": 0.01}}
    saved_model, saved_ema = load_file(str(path / "model.safetensors")), load_file(str(path / "ema.safetensors"))
    model = _Net(seed=99)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    ema = EMA(model, 0.9)
    state, extras = read_checkpoint(path, model, ema, optimizer, hint="delete it", extra_optimizer_keys=("rng",))
    assert state["step"] == 7 and torch.equal(extras["rng"], torch.arange(3))
    assert all(torch.equal(model.state_dict()[k], v) for k, v in saved_model.items())
    assert all(torch.equal(ema.shadow[k], v) for k, v in saved_ema.items())
    assert optimizer.state_dict()["state"][0]["step"] == 1
    (path / "optimizer.safetensors").write_bytes(b"\x00" * 8)
    with pytest.raises(InputFileError, match="step_000007") as info:
        read_checkpoint(path, model, ema, optimizer, hint="delete it", extra_optimizer_keys=("rng",))
    assert info.value.hint == "delete it"


def test_changed_settings_ignore_resumable_keys():
    saved, now = {"lr": 1, "steps": 10, "seed": 0}, {"lr": 2, "steps": 20, "seed": 0}
    assert training.changed_settings(saved, now, ("steps",)) == ["lr"]
    assert training.changed_settings(saved, {**now, "lr": 1}, ("steps",)) == []


# ---------------------------------------------------------------------------------------------------------------
# model folders and entry points
# ---------------------------------------------------------------------------------------------------------------

def test_model_folder_round_trip_and_errors(tmp_path):
    model = _Net()
    training.write_model_folder(tmp_path / "m", {"format": "test.Net", "net": {"width": 3}},
                                training.cpu_state(model, torch.float16), metadata={"format": "test.Net"})
    assert stat.S_IMODE((tmp_path / "m" / "model.safetensors").stat().st_mode) == 0o644
    assert training.model_folder_exists(tmp_path / "m")
    meta, state = training.read_model_folder(tmp_path / "m", format_name="test.Net", config_key="net",
                                             missing="net file missing", hint="write one")
    assert meta["net"] == {"width": 3} and state["lin.weight"].dtype == torch.float16
    assert torch.equal(state["lin.weight"], model.lin.weight.detach().half())
    with pytest.raises(InputFileError, match="not a other.Net config"):
        training.read_model_folder(tmp_path / "m", format_name="other.Net", config_key="net", missing="-", hint="-")
    with pytest.raises(InputFileError, match="gone"):
        training.require_model_folder(tmp_path / "gone", "no weights", hint="train some")


def test_logged_losses_and_progress(tmp_path):
    log = tmp_path / "train.log"
    log.write_text("train:  1%| | 1/100 [00:01<02:00, loss=0.5]\rtrain:  2%| | 2/100 [00:02<02:00, loss=0.3]\n"
                   "train:  2%| | 2/100 [00:02<02:00, loss=0.25]\nnoise\ntrain: 3/100 [00:03, loss=1e-1]\n")
    losses = training.logged_losses(log)
    assert losses == {1: 0.5, 2: 0.25, 3: 0.1}
    assert training.loss_progress(losses, 2) == {"step": 3, "loss_first": 0.375, "loss_recent": 0.175}
    assert training.loss_progress({}, 2) == {"step": 0, "loss_first": None, "loss_recent": None}


def test_config_files_and_user_errors_exit_2(tmp_path, capsys):
    with pytest.raises(InputFileError, match="no such config file"):
        training.read_config_file(tmp_path / "absent.json", dict)
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(InputFileError, match="not a JSON config"):
        training.read_config_file(tmp_path / "bad.json", dict)
    (tmp_path / "ok.json").write_text('{"a": 1}')
    assert training.read_config_file(tmp_path / "ok.json", dict) == {"a": 1}
    with pytest.raises(SystemExit) as info, training.exit_on_user_error():
        raise ConfigError("learning_rate must be > 0")
    assert info.value.code == 2 and "error: learning_rate must be > 0" in capsys.readouterr().err
