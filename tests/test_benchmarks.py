"""The benchmarks on their smallest settings: they run and report what they claim."""

import json

import joblib
import numpy as np
import pytest
from _support.mnist import needs_mnist

from benchmarks import attack_speed, certified_sweep, inference_speed


def test_inference_speed_compares_savedmodel_with_predict():
    row = inference_speed.measure("dense", repeat=1)
    assert row["batch"] == inference_speed.BATCH == 1000
    pairs = np.array(row["pairs_seconds"])
    assert pairs.shape == (3, 2) and np.all(pairs > 0)
    ratios = pairs[:, 0] / pairs[:, 1]
    q = row["ratio_savedmodel_over_predict"]
    assert q["min"] <= q["median"] <= q["max"]
    assert np.isclose(q["median"], np.median(ratios), rtol=1e-3)


def test_attack_speed_reports_one_row_per_batch_size():
    rows = attack_speed.measure("dense", batch_sizes=(500,), steps=3, repeat=1)
    assert [r["batch_size"] for r in rows] == [500]
    pairs = np.array(rows[0]["pairs_seconds"])
    assert pairs.shape == (3, 2) and np.all(pairs > 0)
    assert rows[0]["steps"] == 3
    assert np.isclose(rows[0]["median_ratio"], np.median(pairs[:, 0] / pairs[:, 1]), rtol=5e-2)


def test_peer_like_layers_are_one_lipschitz():
    """GroupSort2 preserves norms and l2-norm pooling is 1-Lipschitz: their bound of 1 holds."""
    from benchmarks.peer_like_mnist import _layers

    GroupSort2, Pool = _layers()
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(2, 64, 8, 8, 6)).astype("float32")
    sort, pool = GroupSort2(), Pool()
    np.testing.assert_allclose(
        np.linalg.norm(np.asarray(sort(x)).reshape(64, -1), axis=1),
        np.linalg.norm(x.reshape(64, -1), axis=1),
        rtol=1e-5,
    )
    for layer in (sort, pool):
        out = np.asarray(layer(x)) - np.asarray(layer(y))
        ratio = np.linalg.norm(out.reshape(64, -1), axis=1) / np.linalg.norm(
            (x - y).reshape(64, -1), axis=1
        )
        assert ratio.max() <= layer.lipschitz_bound() * (1 + 1e-5)
    # the pooling is tight on a single nonzero window: ||pool(x)|| = ||x||
    z = np.zeros((1, 4, 4, 1), "float32")
    z[0, :2, :2, 0] = [[3.0, 0.0], [0.0, 4.0]]
    assert np.isclose(float(np.asarray(pool(z)).max()), 5.0, atol=1e-5)


def test_grid_search_speed_quick_runs_both_searches_and_reports_the_speedup(tmp_path):
    from benchmarks import grid_search_speed

    out = tmp_path / "grid.json"
    result = grid_search_speed.main(["--quick", "--out", str(out)])
    assert json.loads(out.read_text()) == result
    assert result["quick"] and result["candidates"] == 2 and result["folds"] == 2
    pairs = np.array(result["pairs_seconds_jobs1_jobs2"])
    assert pairs.shape == (1, 2) and np.all(pairs > 0)
    assert np.isclose(result["speedup"]["median"], pairs[0, 0] / pairs[0, 1], rtol=1e-2)
    # cores kept busy (machine-wide): something ran, and never more than the machine has
    busy = np.array(result["pairs_cores_busy_jobs1_jobs2"], dtype=float)
    assert busy.shape == (1, 2) and np.all(busy > 0) and np.all(busy <= joblib.cpu_count() + 0.1)
    assert result["same_best_candidate"]
    assert 0 <= result["mean_test_score_max_abs_difference"] < 0.05
    # the workers ran with their share of the cores, not all of them each
    share = max(joblib.cpu_count() // 2, 1)
    assert result["worker_thread_pools_intra_inter"] == [[share, share]]
    assert result["worker_restarts_during_n_jobs_2"] == 0  # two small fits: no worker replaced


def test_fit_processes_child_reports_memory_and_time():
    """The measuring part of ``fit_processes``, in this process (the whole run is slow)."""
    from benchmarks import fit_processes

    run = fit_processes._child("ours", 2, 1, quick=True)
    assert len(run["rss_mib_after_each_fit"]) == 2 and min(run["rss_mib_after_each_fit"]) > 0
    assert run["wall_s"] > 0 and run["cpu_s"] > 0


@pytest.mark.slow  # twelve fresh interpreters, six of them in pairs: about 80 s
def test_fit_processes_quick_reports_memory_and_cores(tmp_path):
    from benchmarks import fit_processes

    out = tmp_path / "fit_processes.json"
    result = fit_processes.main(["--quick", "--out", str(out)])
    assert json.loads(out.read_text()) == result
    for mode in ("ours", "keras_adam"):
        rss = result["memory"][mode]["rss_mib_after_each_fit"]
        assert len(rss) == 2 and min(rss) > 0
    cores = result["cores"]
    runs = [cores["one_thread_alone"], cores["two_threads_alone"]]
    runs += cores["one_thread_two_side_by_side"]
    assert len(runs) == 4
    blas = result["blas_threads"]
    for name in ("bounded", "unbounded"):
        runs += [blas[name]["alone"], *blas[name]["two_side_by_side"]]
        assert len(blas[name]["two_side_by_side"]) == 2 and blas[name]["slowdown_side_by_side"] > 0
    assert len(runs) == 10
    for run in runs:
        assert run["wall_s"] > 0 and run["cpu_s"] > 0
        assert run["cores_busy"] == pytest.approx(run["cpu_s"] / run["wall_s"], rel=1e-2)


@needs_mnist
def test_certified_sweep_smoke_reports_held_out_and_training_certificates(tmp_path):
    out = tmp_path / "sweep.json"
    result = certified_sweep.main(["--smoke", "--out", str(out)])
    saved = json.loads(out.read_text())
    assert saved["smoke"] is True and len(saved["variants"]) == 2
    for row in saved["variants"].values():
        assert 0.0 <= row["certified"]["1.58"] <= row["certified"]["0.141"] <= row["clean"]
        assert row["lipschitz_bound"] <= 1.0 + 1e-4
    assert set(result["variants"]) == set(saved["variants"])
