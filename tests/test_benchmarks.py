"""The speed benchmarks of issue 6 on their smallest settings: they run and report ratios."""

import numpy as np

from benchmarks import attack_speed, inference_speed


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
