"""The default network is certified, grid search over its parameters is meaningful, presets ship.

The accuracy and robustness of the defaults on real MNIST are asserted by the slow
test in ``tests/test_defaults_mnist.py``.
"""

import inspect
import pickle

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.datasets import load_digits
from sklearn.model_selection import GridSearchCV

from stablekeras import StableClassifier, StableRegressor
from stablekeras.models import lipschitz_bound
from stablekeras.presets import (
    CLASSIFIER_ONLY,
    PRESETS,
    describe_preset,
    get_preset,
    list_presets,
)

X, y = load_digits(return_X_y=True)
X = (X / 16).astype("float32")
# a small certified network so that each fit takes a second or two
SMALL = dict(dense_width=32, dense_depth=1, epochs=3, random_state=0)


def _defaults(cls):
    return {
        name: p.default
        for name, p in inspect.signature(cls.__init__).parameters.items()
        if name != "self"
    }


def test_defaults_build_a_certified_network():
    clf = StableClassifier(**SMALL).fit(X[:300], y[:300])
    assert clf.lipschitz_bound_ <= 1.0 + 1e-4
    assert clf.lipschitz_bound_ == pytest.approx(lipschitz_bound(clf.model_))
    kinds = {type(layer).__name__ for layer in clf.model_.layers}
    assert kinds == {"OrthogonalDense", "OrthogonalNonExpansiveDense"}
    images = StableClassifier(image_shape=(8, 8, 1), width=8, **SMALL).fit(X[:300], y[:300])
    assert images.lipschitz_bound_ <= 1.0 + 1e-4
    kinds = [type(layer).__name__ for layer in images.model_.layers]
    assert kinds[1:4] == ["IsometricLift", "NonExpansiveConv2D", "NonExpansiveConv2D"]
    assert all(layer.enforcement == "normalize" for layer in images.model_.layers[2:4])
    reg = StableRegressor(**SMALL).fit(X[:300], y[:300].astype(float))
    # the network is 1-Lipschitz; the fixed output rescaling multiplies by the target scale
    assert reg.lipschitz_bound_ <= np.std(y[:300]) * (1.0 + 1e-4)


def test_the_margin_aware_loss_trains_the_defaults():
    clf = StableClassifier()
    assert (clf.loss, clf.margin) == ("offset_crossentropy", 3.0)


@pytest.mark.parametrize("image", [False, True], ids=["flat", "image"])
def test_each_step_size_and_constraint_changes_the_fitted_model(image):
    """The grid-search axes of the README's example are live at the new defaults."""
    extra = dict(image_shape=(8, 8, 1), width=8) if image else {}
    probas = {}
    for constraint in ("nonexpansive", "contractive", "none"):
        for step_size in (0.5, 1.0, 2.0):
            clf = StableClassifier(constraint=constraint, step_size=step_size, **SMALL, **extra)
            probas[constraint, step_size] = clf.fit(X[:300], y[:300]).predict_proba(X[300:400])
    keys = list(probas)
    for i, a in enumerate(keys):
        for b in keys[i + 1 :]:
            assert np.abs(probas[a] - probas[b]).max() > 1e-3, (a, b)


def test_constraint_none_is_the_free_network_of_the_same_shape():
    extra = dict(image_shape=(8, 8, 1), width=8, **SMALL)
    stable = StableClassifier(**extra).fit(X[:300], y[:300])
    free = StableClassifier(constraint="none", **extra).fit(X[:300], y[:300])
    assert [layer.name for layer in stable.model_.layers] == [
        layer.name for layer in free.model_.layers
    ]
    assert [tuple(layer.output.shape) for layer in stable.model_.layers] == [
        tuple(layer.output.shape) for layer in free.model_.layers
    ]
    free_kinds = {type(layer).__name__ for layer in free.model_.layers}
    assert {"ResidualConv2D", "ResidualDense", "SpectralDense"} <= free_kinds
    assert not free_kinds & {"OrthogonalDense", "NonExpansiveConv2D"}
    assert free.lipschitz_bound_ > 1.0  # nothing bounds it


def test_the_chapter_network_is_one_parameter_away_and_not_certified():
    clf = StableClassifier(network="chapter", image_shape=(8, 8, 1), **SMALL)
    clf.fit(X[:300], y[:300])
    kinds = [type(layer).__name__ for layer in clf.model_.layers]
    assert kinds[1:3] == ["SpectralConv2D", "MaxPooling2D"]
    assert kinds[-1] == "SpectralDense"
    # free lift and projection: the bound is their norms' product, not 1
    assert clf.lipschitz_bound_ > 1.0


def test_presets_can_be_listed_inspected_and_passed():
    names = list_presets()
    assert {"certified", "certified_mnist", "certified_mnist_dense", "chapter"} <= set(names)
    for name in names:
        text = describe_preset(name)
        assert text.startswith(f"{name}: ") and "=" in text
        params = get_preset(name)
        clf = StableClassifier.from_preset(name)
        assert {k: clf.get_params()[k] for k in params} == params
        reg = StableRegressor.from_preset(name)
        assert set(get_preset(name, for_regressor=True)) == set(params) - CLASSIFIER_ONLY
        assert not set(reg.get_params()) & (CLASSIFIER_ONLY - {"loss"})
    # the registry cannot be changed through what get_preset returns
    get_preset("chapter")["enforcement"] = "project"
    assert PRESETS["chapter"].params["enforcement"] == "substeps"
    with pytest.raises(ValueError, match="name='chapters'"):
        get_preset("chapters")
    with pytest.raises(TypeError):
        PRESETS["chapter"].params["enforcement"] = "project"


def test_the_certified_preset_is_the_defaults():
    defaults = _defaults(StableClassifier)
    for key, value in get_preset("certified").items():
        assert defaults[key] == value, key


def test_presets_give_flat_parameters_to_clone_pickle_and_grid_search():
    clf = StableClassifier.from_preset("chapter", image_shape=(8, 8, 1), epochs=2, random_state=0)
    assert clone(clf).get_params() == clf.get_params()
    assert pickle.loads(pickle.dumps(clf)).get_params() == clf.get_params()
    search = GridSearchCV(
        clf, {"step_size": [0.25, 0.5], "enforcement": ["substeps", "project"]}, cv=2
    )
    search.fit(X[:200], y[:200])
    assert set(search.best_params_) == {"step_size", "enforcement"}
    assert search.best_estimator_.network == "chapter"


def test_renamed_parameters_name_their_successor():
    for old in ("lift", "projection"):
        with pytest.raises(TypeError, match=f"`{old}` was replaced by `network`"):
            StableClassifier(**{old: "isometric"})
        with pytest.raises(TypeError, match=f"`{old}` was replaced by `network`"):
            StableRegressor().set_params(**{old: "orthogonal"})
    with pytest.raises(
        TypeError, match="`mode` was replaced by `enforcement`.*'constraint' -> 'project'"
    ):
        StableClassifier(mode="constraint")
    with pytest.raises(TypeError, match="`mode` was replaced by `enforcement`"):
        StableClassifier().set_params(mode="substeps")


def test_layers_refuse_mode_and_read_configs_saved_with_it():
    from stablekeras.layers import ContractiveDense, NonExpansiveConv2D

    with pytest.raises(TypeError, match="pass enforcement='project'"):
        NonExpansiveConv2D(4, mode="constraint")
    # a layer config of stablekeras 0.1 (``mode``) loads with the new name
    config = NonExpansiveConv2D(4, enforcement="substeps").get_config()
    config["mode"] = config.pop("enforcement")
    assert NonExpansiveConv2D.from_config(config).enforcement == "substeps"
    config = ContractiveDense(4).get_config()
    config.pop("enforcement")
    config["mode"] = "constraint"
    assert ContractiveDense.from_config(config).enforcement == "project"
