"""The command line: each subcommand, the demo, one-line errors for bad arguments, and a
start without TensorFlow for help, version and usage errors."""

import importlib.metadata
import json
import os
import pickle
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from stablekeras import StableClassifier, datasets
from stablekeras.cli import main
from stablekeras.presets import get_preset

#: A line of TensorFlow's C++ (absl) logging: "I0000 00:00:1796159355.410546   17894 port.cc:153]"
#: or absl's notice that it logs to stderr before being initialised.
TF_CPP_LOG = re.compile(r"^[IWEF]\d{4} \d\d:\d\d:\d\d\.\d+\s+\d+ \S+:\d+\]|absl::InitializeLog")

#: The release, written once in ``stablekeras/__init__.py`` (pyproject.toml reads it from
#: there), which the installed distribution and the command line must report.
VERSION = re.search(
    r'^__version__ = "([^"]+)"$',
    (Path(__file__).parents[1] / "stablekeras" / "__init__.py").read_text(),
    re.M,
).group(1)

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
    options = ["--split", "train[:1200]", "--network", "chapter", "--loss", "hinge"]
    options += ["--margin", "0.4", "--max-norm", "1"]
    assert main(["train", "--quiet", "--out", str(path), *options, *TINY]) == 0
    return path


def _run(*argv, timeout=300):
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout)


# ---- starting fast and quietly ------------------------------------------------------------------
def test_help_version_and_usage_errors_do_not_import_tensorflow(tmp_path):
    """In a fresh process, main() answers these without TensorFlow in sys.modules."""
    missing = os.fspath(tmp_path / "missing.pkl")
    script = textwrap.dedent(
        f"""
        import json, sys
        from stablekeras.cli import main
        statuses = []
        for argv in (["--help"], ["--version"], ["demo", "--help"], ["frobnicate"],
                     ["demo", "--epochs", "0"], ["evaluate", "--eps", "x", "--model", "m"],
                     ["evaluate", "--model", {missing!r}]):
            statuses.append(main(argv))
        loaded = sorted({{m.split(".")[0] for m in sys.modules}} & {{"tensorflow", "keras"}})
        print(json.dumps({{"statuses": statuses, "loaded": loaded}}))
        """
    )
    proc = _run(sys.executable, "-c", script)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["statuses"] == [0, 0, 0, 2, 2, 2, 2]
    assert report["loaded"] == []
    assert "model file not found" in proc.stderr and "Traceback" not in proc.stderr
    # the package's headline names are still there, imported on first use
    check = (
        "import sys, stablekeras; assert 'tensorflow' not in sys.modules; "
        "print(stablekeras.__version__, 'StableClassifier' in dir(stablekeras)); "
        "from stablekeras import StableClassifier, layers; "
        "print(StableClassifier.__module__, layers.NonExpansiveDense.__name__, "
        "stablekeras.robustness.format_table.__name__)"
    )
    proc = _run(sys.executable, "-c", check)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == [
        VERSION, "True", "stablekeras.estimators.classifier", "NonExpansiveDense", "format_table"
    ]  # fmt: skip


def test_python_m_stablekeras_and_the_console_script_in_real_processes(tmp_path):
    console = Path(sys.executable).with_name("stablekeras")  # the [project.scripts] entry point
    assert console.exists(), "the stablekeras console script is not installed"
    missing = tmp_path / "missing.pkl"
    procs = {
        "help": _run(sys.executable, "-m", "stablekeras", "--help"),
        "version": _run(os.fspath(console), "--version"),
        "error": _run(os.fspath(console), "evaluate", "--model", os.fspath(missing)),
    }
    assert procs["help"].returncode == 0 and procs["help"].stderr == ""
    assert "usage: stablekeras" in procs["help"].stdout
    for command in ("demo", "train", "evaluate", "export"):
        assert command in procs["help"].stdout
    assert procs["version"].returncode == 0
    assert procs["version"].stdout == f"stablekeras {VERSION}\n"
    # the installed distribution took its version from the package (pyproject's dynamic attr)
    assert importlib.metadata.version("stablekeras") == VERSION
    assert procs["error"].returncode == 2
    assert procs["error"].stderr == f"stablekeras: error: model file not found: {missing}\n"


def test_tensorflow_logs_only_with_verbose(tmp_path):
    """A subcommand that runs TensorFlow prints none of its C++ logs unless --verbose."""
    argv = ["train", "--split", "train[:200]", "--epochs", "1", "--depth", "1", "--width", "4"]
    runs = {}
    for flag in ("--quiet", "--verbose"):
        out = tmp_path / f"{flag[2:]}.pkl"
        runs[flag] = proc = _run(sys.executable, "-m", "stablekeras", *argv, flag, "--out", out)
        assert proc.returncode == 0, proc.stderr
        assert out.exists()
    quiet = [line for line in runs["--quiet"].stderr.splitlines() if TF_CPP_LOG.search(line)]
    assert quiet == [], runs["--quiet"].stderr
    assert runs["--quiet"].stderr == ""
    # the control: the same TensorFlow does log at start-up when asked to
    verbose = [line for line in runs["--verbose"].stderr.splitlines() if TF_CPP_LOG.search(line)]
    assert verbose, runs["--verbose"].stderr


# ---- the subcommands --------------------------------------------------------------------------


@pytest.mark.parametrize("command", [[], ["demo"], ["train"], ["evaluate"], ["export"]])
def test_help(capsys, command):
    assert main([*command, "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: {' '.join(['stablekeras', *command])}")
    if command == ["demo"]:
        assert "--quick" in out and "--eps" in out and "--dataset" in out


def test_demo_quick_writes_plot_saved_model_and_table(tmp_path, capsys):
    out_dir = tmp_path / "out"
    assert main(["demo", "--quick", "--out", str(out_dir)]) == 0
    captured = capsys.readouterr()
    out = captured.out
    # one progress bar per fit (tqdm, on stderr), not Keras' per-epoch logs
    bars = {line.split(":")[0] for line in captured.err.replace("\r", "\n").splitlines()}
    assert {b for b in bars if b.startswith("fitting ")} == {
        "fitting stable (defaults)",
        "fitting unconstrained (constraint='none')",
    }, captured.err[-2000:]
    assert "Epoch 1/" not in captured.err + out
    # the table: both models, clean, robust (both attacks) and certified per eps
    assert "stable (defaults)" in out and "unconstrained (constraint='none')" in out
    assert "held-out accuracy" in out and "Lipschitz bound" in out
    robust = "robust (pgd, l2, 20 steps of 0.1 eps, cross-entropy and margin)"
    assert f"| stable (defaults) | {robust} |" in out
    assert "| stable (defaults) | certified |" in out
    assert "eps=0.3" in out and "eps=1" in out
    assert out.count("\n| ") == 1 + 4  # one table: the separator line and four rows

    plot = out_dir / "robustness.png"
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out_dir / "saved_model" / "1" / "saved_model.pb").is_file()
    results = json.loads((out_dir / "results.json").read_text())
    assert results["image_shape"] == [8, 8, 1]
    assert results["attack"] == {
        "attack": "pgd", "norm": "l2", "steps": 20, "relative_step": 0.1, "loss": "both",
        "from": "the clean image",
    }  # fmt: skip
    assert set(results["models"]) == {"stable", "baseline"}
    stable, base = results["models"]["stable"], results["models"]["baseline"]
    # the estimator at its defaults against constraint="none", same shape and schedule
    defaults = StableClassifier().get_params()
    changed = {k for k, v in stable["params"].items() if v != defaults[k]}
    assert changed == {"image_shape", "random_state", "epochs"}
    assert base["params"] == {**stable["params"], "constraint": "none"}
    assert stable["params"]["epochs"] == 5
    for model in (stable, base):
        curve = model["curve"]
        assert curve["eps"] == [0.0, 0.3, 1.0] and curve["loss"] == "both"
        for both, ce, margin in zip(curve["robust"], *curve["robust_by_loss"].values()):
            assert both <= min(ce, margin)
    # the stable network is more robust than the baseline under the margin attack
    margin = {k: m["curve"]["robust_by_loss"]["margin"] for k, m in results["models"].items()}
    assert any(s > b for e, s, b in zip(stable["curve"]["eps"], *margin.values()) if e >= 0.3), (
        margin
    )
    # every file written is named, and exists
    for path in results["files"].values():
        assert path in out and os.path.exists(path)
    with open(results["files"]["stable_model"], "rb") as fh:
        assert isinstance(pickle.load(fh), StableClassifier)


def test_train_pickles_the_estimator_with_the_options(model_path):
    with open(model_path, "rb") as fh:
        clf = pickle.load(fh)
    assert isinstance(clf, StableClassifier)
    params = clf.get_params()
    assert (params["network"], params["loss"]) == ("chapter", "hinge")
    assert (params["margin"], params["max_norm"]) == (0.4, 1.0)
    assert (params["epochs"], params["width"], params["depth"]) == (2, 8, 1)
    assert clf.n_features_in_ == 64 and clf.lipschitz_bound_ <= 1.0 + 1e-6


def test_train_image_shape_and_dataset_options(tmp_path, capsys, monkeypatch):
    calls = []

    def fake_load_dataset(name, *, split=None, data_dir=None, download=False):
        calls.append((name, split, data_dir, download))
        rng = np.random.RandomState(0)
        return rng.rand(60, 16).astype(np.float32), np.arange(60) % 3

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    path = tmp_path / "conv.pkl"
    argv = ["train", "--quiet", "--dataset", "fake", "--data-dir", "/data", "--split", "test"]
    argv += ["--out", str(path), "--image-shape", "4,4,1", "--max-norm", "none", *TINY]
    assert main(argv) == 0
    assert calls == [("fake", "test", "/data", False)]
    assert "wrote" in capsys.readouterr().out
    with open(path, "rb") as fh:
        clf = pickle.load(fh)
    assert clf.image_shape == (4, 4, 1) and clf.max_norm is None


def test_train_from_a_preset_with_overrides(tmp_path):
    path = tmp_path / "chapter.pkl"
    argv = ["train", "--quiet", "--out", str(path), "--preset", "chapter", "--image-shape", "8,8,1"]
    assert main([*argv, "--epochs", "1", "--split", "train[:200]", "--random-state", "0"]) == 0
    with open(path, "rb") as fh:
        clf = pickle.load(fh)
    expected = {**get_preset("chapter"), "image_shape": (8, 8, 1), "epochs": 1, "random_state": 0}
    params = clf.get_params()
    assert {k: params[k] for k in expected} == expected


def test_evaluate_prints_clean_robust_and_certified(model_path, capsys):
    argv = ["evaluate", "--quiet", "--model", str(model_path), "--split", "train[1200:]"]
    assert main([*argv, "--eps", "0.1,0.5", "--steps", "3"]) == 0
    out = capsys.readouterr().out
    assert "597 points" in out and "Lipschitz bound" in out
    header, _, robust, certified = (
        [c.strip() for c in line.strip("|").split("|")]
        for line in out.splitlines()
        if line.startswith("|")
    )
    assert header[2:] == ["eps=0", "eps=0.1", "eps=0.5"]  # the clean column first
    assert robust[1] == "robust (pgd, l2, 3 steps of 0.1 eps, cross-entropy and margin)"
    clean, r1, r5 = map(float, robust[2:])
    c0, c1, c5 = map(float, certified[2:])
    # certified at eps=0 needs a margin above the rounding allowance: at most the clean figure
    assert 50 < clean and clean >= c0 and clean >= r1 >= r5 and r1 >= c1 >= c5


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
        (["train", "--out", "{tmp}/m.pkl", "--preset", "nope"], "invalid choice: 'nope'"),
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
def test_full_demo(tmp_path, capsys):
    """``make demo``: the estimator at its defaults certifies and resists where the baseline
    does not."""
    assert main(["demo", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "certified" in out and (tmp_path / "robustness.png").exists()
    results = json.loads((tmp_path / "results.json").read_text())
    stable, base = (results["models"][k]["curve"] for k in ("stable", "baseline"))
    assert stable["eps"] == [0.0, 0.1, 0.3, 0.5, 1.0] and results["attack"]["steps"] == 100
    assert stable["certified"][2] > base["certified"][2]  # eps = 0.3
    assert stable["robust"][3] > base["robust"][3]  # eps = 0.5, both attacks
