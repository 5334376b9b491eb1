"""The command line: verbs exist, user mistakes give one message and exit code 2, never a traceback."""

from typer.testing import CliRunner

from earthsynth.cli import app

runner = CliRunner()


def test_verbs_are_listed():
    res = runner.invoke(app, ["--help"])
    assert res.exit_code == 0
    for verb in ("scene", "cameras", "render", "dsm", "mesh", "splat", "generate", "view", "demo"):
        assert verb in res.output


def test_view_of_a_missing_run_folder(tmp_path):
    res = runner.invoke(app, ["view", str(tmp_path / "nope"), "--port", "0"])
    assert res.exit_code == 2 and "is not a folder" in " ".join(res.output.split()) and "Traceback" not in res.output


def test_dsm_on_a_folder_that_is_not_a_scene(tmp_path):
    res = runner.invoke(app, ["dsm", str(tmp_path), "--out", str(tmp_path / "dsm")])
    assert res.exit_code == 2
    assert "scene.json" in res.output and "Traceback" not in res.output
    assert not (tmp_path / "dsm").exists()


def test_bad_roi_is_one_clear_error(tmp_path):
    res = runner.invoke(app, ["dsm", str(tmp_path), "--out", str(tmp_path / "d"), "--roi", "1,2,3"])
    assert res.exit_code == 2 and "roi" in res.output.lower()
