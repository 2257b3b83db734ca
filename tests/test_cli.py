"""The command line: each subcommand, the demo, and one-line errors for bad arguments."""

import json
import os
import pickle
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from stablekeras import StableClassifier, cli
from stablekeras.cli import main

TINY = ["--epochs", "2", "--width", "8", "--depth", "1", "--random-state", "0"]


def _one_line_error(capsys, status, expected, code=2):
    """The command failed with ``code`` and printed one error line, no traceback."""
    out, err = capsys.readouterr()
    assert status == code, (out, err)
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith("stablekeras") and "error:" in err
    assert expected in err, err


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    """A StableClassifier trained by ``stablekeras train`` on the first 1200 digits."""
    path = tmp_path_factory.mktemp("cli") / "models" / "model.pkl"
    options = ["--split", "train[:1200]", "--loss", "hinge", "--margin", "0.4", "--max-norm", "1"]
    assert main(["train", "--quiet", "--out", str(path), *options, *TINY]) == 0
    return path


# ---- the subcommands --------------------------------------------------------------------------
def test_python_m_stablekeras_help_and_error_in_real_processes(tmp_path):
    console = Path(sys.executable).with_name("stablekeras")  # the [project.scripts] entry point
    error_cmd = [os.fspath(console)] if console.exists() else [sys.executable, "-m", "stablekeras"]
    runs = {
        "help": [sys.executable, "-m", "stablekeras", "--help"],
        "error": [*error_cmd, "evaluate", "--model", os.fspath(tmp_path / "missing.pkl")],
    }
    procs = {
        k: subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for k, cmd in runs.items()
    }
    results = {k: (p.communicate(timeout=120), p.returncode) for k, p in procs.items()}
    (out, _), status = results["help"]
    assert status == 0
    assert "usage: stablekeras" in out
    for command in ("demo", "train", "evaluate", "export"):
        assert command in out
    (_, err), status = results["error"]
    assert status == 2
    assert "Traceback" not in err
    # TensorFlow's C++ logging may print to stderr at import; our error is the last line
    assert err.strip().splitlines()[-1] == (
        f"stablekeras: error: model file not found: {tmp_path / 'missing.pkl'}"
    )


@pytest.mark.parametrize("command", [[], ["demo"], ["train"], ["evaluate"], ["export"]])
def test_help(capsys, command):
    assert main([*command, "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: {' '.join(['stablekeras', *command])}")
    if command == ["demo"]:
        assert "--quick" in out and "--eps" in out and "--dataset" in out


def test_demo_quick_writes_plot_saved_model_and_table(tmp_path, capsys):
    out_dir = tmp_path / "out"
    assert main(["demo", "--quick", "--quiet", "--epochs", "2", "--out", str(out_dir)]) == 0
    out = capsys.readouterr().out
    # the table: both models, held-out accuracy, Lipschitz bound, robust and certified per eps
    assert "held-out accuracy (%)" in out and "Lipschitz bound" in out
    assert "non-expansive" in out and "unconstrained" in out
    assert "robust" in out and "certified" in out and "eps=0.3" in out and "eps=1" in out

    plot = out_dir / "robustness.png"
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out_dir / "saved_model" / "1" / "saved_model.pb").is_file()
    results = json.loads((out_dir / "results.json").read_text())
    assert set(results["models"]) == {"nonexpansive", "baseline"}
    ne, base = results["models"]["nonexpansive"], results["models"]["baseline"]
    assert ne["params"]["constraint"] == "nonexpansive" and base["params"]["constraint"] == "none"
    assert ne["params"]["width"] == base["params"]["width"]  # the same size
    assert ne["lipschitz_bound"] <= 1.0 + 1e-6 < base["lipschitz_bound"]
    assert ne["curve"]["eps"] == [0.0, 0.3, 1.0]
    # every file written is named, and exists
    for path in results["files"].values():
        assert path in out and os.path.exists(path)
    with open(results["files"]["nonexpansive_model"], "rb") as fh:
        assert isinstance(pickle.load(fh), StableClassifier)


def test_train_pickles_the_estimator_with_the_options(model_path):
    with open(model_path, "rb") as fh:
        clf = pickle.load(fh)
    assert isinstance(clf, StableClassifier)
    params = clf.get_params()
    assert (params["loss"], params["margin"], params["max_norm"]) == ("hinge", 0.4, 1.0)
    assert (params["epochs"], params["width"], params["depth"]) == (2, 8, 1)
    assert clf.n_features_in_ == 64 and clf.lipschitz_bound_ <= 1.0 + 1e-6


def test_train_image_shape_and_dataset_options(tmp_path, capsys, monkeypatch):
    calls = []

    def fake_load_dataset(name, *, split=None, data_dir=None, download=False):
        calls.append((name, split, data_dir, download))
        rng = np.random.RandomState(0)
        return rng.rand(60, 16).astype(np.float32), np.arange(60) % 3

    monkeypatch.setattr(cli, "load_dataset", fake_load_dataset)
    path = tmp_path / "conv.pkl"
    argv = ["train", "--quiet", "--dataset", "fake", "--data-dir", "/data", "--split", "test"]
    argv += ["--out", str(path), "--image-shape", "4,4,1", "--max-norm", "none", *TINY]
    assert main(argv) == 0
    assert calls == [("fake", "test", "/data", False)]
    assert "wrote" in capsys.readouterr().out
    with open(path, "rb") as fh:
        clf = pickle.load(fh)
    assert clf.image_shape == (4, 4, 1) and clf.max_norm is None


def test_evaluate_prints_clean_robust_and_certified(model_path, capsys):
    argv = ["evaluate", "--quiet", "--model", str(model_path), "--split", "train[1200:]"]
    assert main([*argv, "--eps", "0.1,0.5", "--steps", "3"]) == 0
    out = capsys.readouterr().out
    assert "597 points" in out and "Lipschitz bound" in out
    header, _, robust, certified = out.strip().splitlines()[-4:]
    assert header.split()[3:] == ["clean", "eps=0.1", "eps=0.5"]
    clean, r1, r5 = map(float, robust.split()[-3:])
    c0, c1, c5 = map(float, certified.split()[-3:])
    assert 50 < clean == c0 and clean >= r1 >= r5 and r1 >= c1 >= c5


def test_export_prints_the_version_path(model_path, tmp_path, capsys):
    base = tmp_path / "served"
    for expected in ("1", "2"):
        assert main(["export", "--model", str(model_path), "--out", str(base)]) == 0
        assert capsys.readouterr().out.strip() == str(base / expected)
    assert main(["export", "--model", str(model_path), "--out", str(base), "--version", "7"]) == 0
    assert capsys.readouterr().out.strip() == str(base / "7")
    assert sorted(os.listdir(base)) == ["1", "2", "7"]
    status = main(["export", "--model", str(model_path), "--out", str(base), "--version", "2"])
    _one_line_error(capsys, status, "Version 2 already exists")


# ---- bad arguments ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "argv, expected",
    [
        (["frobnicate"], "invalid choice: 'frobnicate'"),
        (["train"], "the following arguments are required: --out"),
        (["demo", "--eps", "0.1,abc"], "'abc' is not a number"),
        (["demo", "--eps", "0.1,-1"], "radii must be finite and >= 0"),
        (["demo", "--eps", "nan"], "radii must be finite"),
        (["demo", "--epochs", "0"], "expected a positive integer"),
        (["train", "--out", "{tmp}/m.pkl", "--image-shape", "8,8"], "invalid image shape"),
        (["train", "--out", "{tmp}/m.pkl", "--depth", "two"], "invalid int value: 'two'"),
        (["train", "--out", "{tmp}/m.pkl", "--depth", "-1"], "'depth' parameter"),
        (["train", "--out", "{tmp}/m.pkl", "--constraint", "bogus"], "'constraint' parameter"),
        (["train", "--out", "{tmp}/m.pkl", "--max-norm", "0"], "'max_norm' parameter"),
        (["train", "--out", "{tmp}/m.pkl", "--image-shape", "4,4,1"], "image_shape=(4, 4, 1)"),
        (["train", "--out", "{tmp}/m.pkl", "--dataset", "nosuchset"], "nosuchset"),
        (["train", "--out", "{tmp}/m.pkl", "--split", "bogus"], "bogus"),
        (["demo", "--out", "{tmp}/out", "--dataset", "nosuchset"], "nosuchset"),
        (["evaluate", "--model", "{tmp}/missing.pkl"], "model file not found"),
        (["export", "--model", "{tmp}/missing.pkl", "--out", "{tmp}/s"], "model file not found"),
        (["export", "--model", "{tmp}/junk.pkl", "--out", "{tmp}/s"], "cannot read a model"),
        (["export", "--model", "{tmp}/other.pkl", "--out", "{tmp}/s"], "not a stablekeras"),
        (["evaluate", "--model", "{model}", "--eps", "0.1,x"], "invalid eps list"),
        (["evaluate", "--model", "{model}", "--split", "train[:5]+nope"], "nope"),
    ],
)
def test_bad_arguments_give_one_line_and_status_2(argv, expected, tmp_path, capsys, model_path):
    (tmp_path / "junk.pkl").write_text("not a pickle")
    (tmp_path / "other.pkl").write_bytes(pickle.dumps({"a": 1}))
    status = main([a.format(tmp=tmp_path, model=model_path) for a in argv])
    _one_line_error(capsys, status, expected)
    for name in ("m.pkl", "s", "out"):  # nothing written
        assert not (tmp_path / name).exists()


def test_unavailable_dataset_is_one_error_line_and_status_1(tmp_path, capsys):
    argv = ["train", "--dataset", "mnist", "--data-dir", str(tmp_path / "tfds")]
    status = main([*argv, "--out", str(tmp_path / "m.pkl")])
    out, err = capsys.readouterr()
    assert status == 1
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("stablekeras")]
    assert len(lines) == 1 and "'mnist' is not available" in lines[0]  # TFDS may log too
    assert not (tmp_path / "m.pkl").exists()


@pytest.mark.slow
def test_full_demo_under_five_minutes(tmp_path, capsys):
    started = time.perf_counter()
    assert main(["demo", "--out", str(tmp_path)]) == 0
    seconds = time.perf_counter() - started
    out = capsys.readouterr().out
    assert "certified" in out and (tmp_path / "robustness.png").exists()
    results = json.loads((tmp_path / "results.json").read_text())
    ne, base = (results["models"][k]["curve"] for k in ("nonexpansive", "baseline"))
    assert ne["eps"][-1] == 1.0 and ne["certified"][3] > base["certified"][3]  # eps = 0.3
    assert ne["robust"][4] > base["robust"][4]  # eps = 0.5
    assert seconds < 300, f"the demo took {seconds:.0f} s"
