"""The README's "Ten lines" example runs as written and says what it claims.

The example is read from README.md (the first ``python`` block after the "Ten lines"
heading) and executed; its grid search must then rank four distinct candidates, refit
the most robust one, and score the certified network above the unconstrained one on the
certified scorer (the unconstrained network certifies nothing).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"


def ten_lines() -> str:
    text = README.read_text()
    section = text[text.index("## Ten lines") :]
    match = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert match, "no python block under '## Ten lines'"
    return match.group(1)


def test_the_example_is_there_and_uses_the_public_api():
    code = ten_lines()
    compile(code, "README.md", "exec")
    assert "from stablekeras import StableClassifier" in code
    assert 'loss="both"' in code  # the measure used everywhere


@pytest.mark.slow
def test_the_ten_lines_run(capsys):
    namespace: dict = {}
    exec(compile(ten_lines(), "README.md", "exec"), namespace)
    search = namespace["search"]
    results = search.cv_results_
    assert len(results["params"]) == 4
    assert len({round(v, 12) for v in results["mean_test_accuracy"]}) == 4
    certified = {
        p["stableclassifier__constraint"]: v
        for p, v in zip(results["params"], results["mean_test_certified"])
    }
    assert certified["none"] == 0.0 and certified["nonexpansive"] > 0.5
    assert search.best_params_["stableclassifier__constraint"] == "nonexpansive"
    assert "stableclassifier__step_size" in capsys.readouterr().out
