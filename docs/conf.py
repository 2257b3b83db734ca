"""Sphinx configuration of the stablekeras documentation site (``make docs``).

The API reference is generated from the numpydoc docstrings (autodoc and
numpydoc); the tutorials are the notebooks of ``tutorials/``, rendered from their
committed outputs without executing them (myst-nb with execution off).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def _import_tensorflow_quietly() -> None:
    """autodoc imports TensorFlow; its C++ start-up logs bypass the log level, so
    they go to /dev/null (file descriptor 2) during the import."""
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        import tensorflow  # noqa: F401
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


_import_tensorflow_quietly()

import stablekeras  # noqa: E402

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent

project = "stablekeras"
author = "the stablekeras developers"
copyright = "the stablekeras developers"  # noqa: A001 (Sphinx's name)
release = version = stablekeras.__version__

extensions = [
    "sphinx.ext.autodoc",
    "numpydoc",
    "myst_nb",
]
exclude_patterns = ["_build", "jupyter_execute", ".ipynb_checkpoints"]

# API reference: members in source order, the class docstring holds the parameters.
autodoc_member_order = "bysource"
autodoc_typehints = "none"  # the numpydoc Parameters sections give the types
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False

# Tutorials: rendered from the outputs committed in tutorials/, never executed here.
nb_execution_mode = "off"
myst_heading_anchors = 3

html_theme = "furo"
html_title = f"stablekeras {release}"

# The notebooks live in tutorials/ (the test suite runs them there); the site takes
# a copy, refreshed at each build, so that they sit inside the source directory.
_TUTORIALS = DOCS / "tutorials"
_TUTORIALS.mkdir(exist_ok=True)
_sources = {path.name: path for path in sorted((ROOT / "tutorials").glob("*.ipynb"))}
for stale in _TUTORIALS.glob("*.ipynb"):
    if stale.name not in _sources:
        stale.unlink()
for name, path in _sources.items():
    shutil.copy2(path, _TUTORIALS / name)


def _skip_foreign_members(app, what, name, obj, skip, options):
    """Document what stablekeras defines: not the methods scikit-learn generates on
    estimators (``set_score_request`` and the like), whose docstrings point into
    scikit-learn's own site."""
    module = getattr(obj, "__module__", None) or ""
    if what == "class" and module.startswith(("sklearn.", "keras.")):
        return True
    return None


def setup(app):
    app.connect("autodoc-skip-member", _skip_foreign_members)
