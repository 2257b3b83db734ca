"""SavedModel export: TF Serving's layout, atomicity, signatures, folded pipelines.

No TF Serving binary is needed: the exports are checked the way TF Serving reads
them (``saved_model_cli``, a fresh Python process that only has TensorFlow, and
the REST request body fed through the signature's own input spec).
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from sklearn.datasets import load_digits
from sklearn.decomposition import PCA
from sklearn.exceptions import NotFittedError
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import FunctionTransformer, MinMaxScaler, StandardScaler

from stablekeras import StableClassifier, StableRegressor
from stablekeras.export import INPUT_NAME, SIGNATURE_NAME, export_saved_model, serving_request

LABELS = np.array(["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"])
FAST = dict(epochs=2, width=16, depth=2, random_state=0)


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    return X.astype(np.float32), y


@pytest.fixture(scope="module")
def clf(digits):
    """A classifier with string labels, trained on digits / 16."""
    X, y = digits
    return StableClassifier(**FAST).fit(X[:600] / 16, LABELS[y[:600]])


@pytest.fixture(scope="module")
def version_dir(clf, tmp_path_factory):
    return export_saved_model(clf, tmp_path_factory.mktemp("served") / "digits")


def _serve(path, X):
    sig = tf.saved_model.load(os.fspath(path)).signatures[SIGNATURE_NAME]
    return {k: v.numpy() for k, v in sig(**{INPUT_NAME: tf.constant(X, tf.float32)}).items()}


def _saved_model_cli():
    exe = Path(sys.executable).with_name("saved_model_cli")
    if exe.exists():
        return [os.fspath(exe)]
    return [sys.executable, "-m", "tensorflow.python.tools.saved_model_cli"]


FRESH_PROCESS = """
import sys
import numpy as np
import tensorflow as tf
export_dir, x, proba, classes = sys.argv[1:]
sig = tf.saved_model.load(export_dir).signatures["serving_default"]
out = sig(inputs=tf.constant(np.load(x)))
np.save(proba, out["probabilities"].numpy())
np.save(classes, np.array([c.decode("utf-8") for c in out["classes"].numpy()]))
assert "stablekeras" not in sys.modules, "serving needs no stablekeras"
"""


@pytest.fixture(scope="module")
def processes(digits, version_dir, tmp_path_factory):
    """The out-of-process checks, started together: each pays TensorFlow's import."""
    io = tmp_path_factory.mktemp("io")
    np.save(io / "x_run.npy", digits[0][1000:1004] / 16)
    np.save(io / "x_fresh.npy", digits[0][600:900] / 16)
    cli = _saved_model_cli()
    commands = {
        "show": [*cli, "show", "--dir", version_dir, "--all"],
        "run": [*cli, "run", "--dir", version_dir, "--tag_set", "serve"]
        + ["--signature_def", SIGNATURE_NAME, "--inputs", f"{INPUT_NAME}={io / 'x_run.npy'}"],
        "fresh": [sys.executable, "-c", FRESH_PROCESS, version_dir]
        + [os.fspath(io / n) for n in ("x_fresh.npy", "p.npy", "c.npy")],
    }
    started = {}
    for key, cmd in commands.items():
        with open(io / f"{key}.out", "w") as out, open(io / f"{key}.err", "w") as err:
            started[key] = subprocess.Popen(cmd, stdout=out, stderr=err, text=True)

    def finish(key):
        assert started[key].wait(timeout=180) == 0, (io / f"{key}.err").read_text()[-2000:]
        return (io / f"{key}.out").read_text()

    yield io, finish
    for proc in started.values():
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_two_exports_give_versions_1_and_2(clf, tmp_path):
    base = tmp_path / "digits"
    first = export_saved_model(clf, base)
    second = export_saved_model(clf, base)
    assert first == os.fspath(base / "1") and second == os.fspath(base / "2")
    assert sorted(os.listdir(base)) == ["1", "2"]
    assert (base / "2" / "saved_model.pb").is_file() and (base / "2" / "variables").is_dir()


def test_version_directory_is_readable_by_others(version_dir):
    # a server often runs as another user: the version directory must not be 0700
    umask = os.umask(0)
    os.umask(umask)
    assert os.stat(version_dir).st_mode & 0o777 == 0o777 & ~umask


def test_explicit_version_and_no_overwrite(clf, tmp_path):
    base = tmp_path / "m"
    assert export_saved_model(clf, base, version=7) == os.fspath(base / "7")
    before = sorted(os.listdir(base / "7"))
    with pytest.raises(FileExistsError, match="7"):
        export_saved_model(clf, base, version=7)
    assert sorted(os.listdir(base / "7")) == before
    assert os.path.basename(export_saved_model(clf, base)) == "8"
    assert sorted(os.listdir(base)) == ["7", "8"]
    with pytest.raises(ValueError, match="version"):
        export_saved_model(clf, base, version=-1)


@pytest.mark.parametrize("error", [RuntimeError("disk full"), KeyboardInterrupt()])
def test_failed_export_leaves_nothing_behind(clf, tmp_path, monkeypatch, error):
    base = tmp_path / "m"
    export_saved_model(clf, base)
    snapshot = {p: p.stat().st_mtime_ns for p in base.rglob("*")}
    real_save = tf.saved_model.save

    def save_then_fail(obj, export_dir, *args, **kwargs):
        real_save(obj, export_dir, *args, **kwargs)  # a complete write, then the failure
        assert os.listdir(export_dir)
        raise error

    monkeypatch.setattr(tf.saved_model, "save", save_then_fail)
    with pytest.raises(type(error)):
        export_saved_model(clf, base)
    assert os.listdir(base) == ["1"]  # no version 2, no temporary directory
    assert {p: p.stat().st_mtime_ns for p in base.rglob("*")} == snapshot


def test_saved_model_cli_show_lists_the_signature(processes):
    stdout = processes[1]("show")
    block = stdout.split(f"signature_def['{SIGNATURE_NAME}']:", 1)[1].split("signature_def[", 1)[0]
    inputs_part, outputs_part = block.split("contains the following output(s):")

    def tensors(text, kind):
        found = {}
        for chunk in text.split(f"{kind}['")[1:]:
            name, rest = chunk.split("']", 1)
            found[name] = (
                rest.split("dtype: ")[1].split()[0],
                rest.split("shape: ")[1].split("\n")[0],
            )
        return found

    assert tensors(inputs_part, "inputs") == {INPUT_NAME: ("DT_FLOAT", "(-1, 64)")}
    assert tensors(outputs_part, "outputs") == {
        "probabilities": ("DT_FLOAT", "(-1, 10)"),
        "logits": ("DT_FLOAT", "(-1, 10)"),
        "class_ids": ("DT_INT64", "(-1)"),
        "classes": ("DT_STRING", "(-1)"),
    }
    assert "tensorflow/serving/predict" in block


def test_saved_model_cli_run(clf, processes):
    io, finish = processes
    stdout = finish("run")
    for key in ("probabilities", "logits", "class_ids", "classes"):
        assert f"Result for output key {key}:" in stdout
    printed = stdout.split("Result for output key classes:")[1].split("Result")[0]
    expected = clf.predict(np.load(io / "x_run.npy"))
    assert [f"b'{c}'" for c in expected] == printed.strip(" []\n").split()


def test_fresh_process_without_stablekeras_matches_estimator(clf, processes):
    io, finish = processes
    finish("fresh")
    X = np.load(io / "x_fresh.npy")
    np.testing.assert_allclose(np.load(io / "p.npy"), clf.predict_proba(X), rtol=0, atol=1e-6)
    np.testing.assert_array_equal(np.load(io / "c.npy"), clf.predict(X))


def test_rest_request_body_reproduces_predict_proba(clf, digits, version_dir):
    X = digits[0][900:950] / 16
    body = json.loads(json.dumps(serving_request(X)))  # what goes over the wire
    assert body["signature_name"] == SIGNATURE_NAME
    sig = tf.saved_model.load(version_dir).signatures[body["signature_name"]]
    args, kwargs = sig.structured_input_signature
    assert args == () and list(kwargs) == [INPUT_NAME]
    spec = kwargs[INPUT_NAME]
    assert spec.dtype == tf.float32 and spec.shape.as_list() == [None, clf.n_features_in_]
    # TF Serving's row format: "instances" is the batch of the single named input
    out = sig(**{INPUT_NAME: tf.constant(body["instances"], dtype=spec.dtype)})
    np.testing.assert_allclose(out["probabilities"].numpy(), clf.predict_proba(X), atol=1e-6)
    assert serving_request(X, signature_name="other")["signature_name"] == "other"
    with pytest.raises(ValueError, match="2-D"):
        serving_request(X[0])


@pytest.mark.parametrize(
    "scalers",
    [
        [StandardScaler()],
        [MinMaxScaler()],
        [
            StandardScaler(with_mean=False),
            MinMaxScaler(feature_range=(-1, 1), clip=True),
            FunctionTransformer(),
            "passthrough",
        ],
    ],
    ids=["standard", "minmax", "chain"],
)
def test_pipeline_preprocessing_is_folded(digits, tmp_path, scalers):
    X, y = digits  # raw 0..16 grey levels: the scalers matter
    y = 10 * y + 3  # integer labels that are not 0..n-1
    pipe = make_pipeline(*scalers, StableClassifier(**FAST)).fit(X[:400], y[:400])
    X_test = X[400:700]  # some pixels exceed the training range: MinMaxScaler's clip acts
    out = _serve(export_saved_model(pipe, tmp_path), X_test)
    np.testing.assert_allclose(out["probabilities"], pipe.predict_proba(X_test), atol=1e-5)
    assert out["classes"].dtype == np.int64
    np.testing.assert_array_equal(out["classes"], pipe.predict(X_test))
    np.testing.assert_array_equal(pipe.classes_[out["class_ids"]], out["classes"])


def test_unsupported_pipelines_and_estimators(digits, clf, tmp_path):
    X, y = digits
    with pytest.raises(ValueError, match="'pca'.*MinMaxScaler, StandardScaler"):
        export_saved_model(make_pipeline(PCA(8), StableClassifier()), tmp_path)
    log_step = Pipeline([("log", FunctionTransformer(np.log1p)), ("clf", StableClassifier())])
    with pytest.raises(ValueError, match="'log'"):
        export_saved_model(log_step, tmp_path)
    with pytest.raises(TypeError, match="LogisticRegression"):
        export_saved_model(LogisticRegression().fit(X[:100], y[:100]), tmp_path)
    with pytest.raises(TypeError, match="LogisticRegression"):
        export_saved_model(make_pipeline(StandardScaler(), LogisticRegression()), tmp_path)
    with pytest.raises(NotFittedError):
        export_saved_model(StableClassifier(), tmp_path)
    with pytest.raises(NotFittedError):
        export_saved_model(make_pipeline(StandardScaler(), StableClassifier()), tmp_path)
    assert os.listdir(tmp_path) == []  # nothing written by a refused export


@pytest.mark.parametrize("multi", [False, True], ids=["1d", "2d"])
def test_regressor_predictions(tmp_path, multi):
    rng = np.random.RandomState(0)
    X = rng.rand(300, 5).astype(np.float32)
    y = np.c_[X.sum(axis=1), X[:, 0] - 2 * X[:, 1]] if multi else 3 * X.sum(axis=1) + 1
    reg = StableRegressor(**FAST).fit(X, y)
    out = _serve(export_saved_model(reg, tmp_path), X[:50])
    assert set(out) == {"predictions"}
    assert out["predictions"].shape == ((50, 2) if multi else (50,))
    np.testing.assert_allclose(out["predictions"], reg.predict(X[:50]), rtol=1e-6, atol=1e-6)
