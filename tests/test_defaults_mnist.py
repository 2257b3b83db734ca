"""The estimator at its defaults on real MNIST (slow): issue 13's accuracy and robustness targets.

``python -m benchmarks.defaults_mnist``'s measurement, with one fit of each network
(the fit-time ratio is a benchmark figure, recorded in its JSON, never asserted).
"""

import pytest
from _support.mnist import needs_mnist

from benchmarks import defaults_mnist as bench


@needs_mnist
def test_smoke_run_reports_both_networks():
    result = bench.run(
        n_train=300,
        n_test=100,
        n_pgd=30,
        steps=5,
        n_pairs=1,
        overrides={"epochs": 1},
        verbose=False,
    )
    for name in ("default", "baseline"):
        r = result[name]
        assert set(r["robust_both_attacks"]) == {bench._key(e) for e in bench.PGD_EPS}
        for k, both in r["robust_both_attacks"].items():
            assert both <= min(
                r["robust_by_attack"][loss][k] for loss in ("crossentropy", "margin")
            )
    assert result["default"]["lipschitz_bound"] <= 1.0 + 1e-4
    assert len(result["fit_ratio"]["pairs"]) == 1
    assert set(result["acceptance"]) == {
        "clean >= 0.97",
        "certified at 0.5 >= 0.90",
        "robust at 1.0 >= max(1.5 x, +0.10) of the baseline",
        "fit ratio <= 2",
    }


@pytest.mark.slow
@needs_mnist
def test_defaults_are_accurate_certified_and_robust():
    result = bench.run(n_pairs=1, verbose=False, pgd_eps=(1.0,))  # the radius it asserts
    ours, base = result["default"], result["baseline"]
    assert ours["clean"] >= 0.97, ours["clean"]
    assert ours["certified"]["0.5"] >= 0.90, ours["certified"]
    robust, baseline = ours["robust_both_attacks"]["1"], base["robust_both_attacks"]["1"]
    assert robust >= max(1.5 * baseline, baseline + 0.10), (robust, baseline)
    assert ours["lipschitz_bound"] <= 1.0 + 1e-4
