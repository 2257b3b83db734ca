"""Every benchmark number has a source: a JSON written by a script, with its provenance.

* every JSON under ``benchmarks/results`` names an existing script in ``benchmarks/``
  and carries the provenance record of ``benchmarks/_results.py`` (command, date,
  machine, load, versions);
* ``benchmarks/RESULTS.md`` and ``README.md`` mention only JSON files that exist;
* every script writes its JSON through ``benchmarks._results.write_result``, and one of
  them, run end to end on a few images, writes a complete record.
"""

from __future__ import annotations

import ast
import json
import re
import shlex
import subprocess
from pathlib import Path

import pytest
from _support.mnist import needs_mnist

from benchmarks import _results

ROOT = Path(__file__).resolve().parent.parent
BENCHMARKS = ROOT / "benchmarks"
RESULTS = BENCHMARKS / "results"
SCRIPTS = sorted(p for p in BENCHMARKS.glob("*.py") if not p.name.startswith("_"))
JSON_FILES = sorted(RESULTS.glob("*.json"))


def check_provenance(record: dict) -> None:
    """Raise AssertionError unless ``record`` is a complete provenance record."""
    missing = [f for f in _results.PROVENANCE_FIELDS if f not in record]
    assert not missing, f"provenance lacks {missing}"
    script = record["script"]
    assert script.startswith("benchmarks/") and (ROOT / script).is_file(), script
    command = shlex.split(record["command"])
    assert command[:3] == ["python", "-m", script[:-3].replace("/", ".")], record["command"]
    for key in ("started_utc", "date_utc"):
        assert record[key].endswith("+00:00"), (key, record[key])  # ISO 8601, UTC
    assert record["started_utc"] <= record["date_utc"]
    machine = record["machine"]
    assert machine["platform"] and machine["cpu_cores"] >= 1 and machine["memory_gib"] > 0
    load = record["load_average"]
    assert len(load["start"]) == len(load["end"]) == 3
    versions = record["versions"]
    for name in ("python", *_results.PACKAGES):
        assert versions.get(name), f"no version of {name}"
    assert "stablekeras_git_commit" in versions


def test_script_list_is_not_empty():
    assert len(SCRIPTS) >= 7 and JSON_FILES


@pytest.mark.parametrize("path", JSON_FILES, ids=lambda p: p.name)
def test_every_result_names_its_script_and_provenance(path):
    result = json.loads(path.read_text())
    assert isinstance(result, dict) and "provenance" in result, f"{path.name}: no provenance"
    check_provenance(result["provenance"])


def test_documents_mention_only_json_files_that_exist():
    """Every JSON RESULTS.md names, and every ``results/*.json`` the README names, exists."""
    patterns = {
        BENCHMARKS / "RESULTS.md": r"([\w-]+\.json)\b",
        ROOT / "README.md": r"results/([\w-]+\.json)\b",  # not the demo's own results.json
    }
    for document, pattern in patterns.items():
        names = set(re.findall(pattern, document.read_text()))
        missing = sorted(n for n in names if not (RESULTS / n).is_file())
        assert not missing, f"{document.name} mentions {missing}, not in benchmarks/results"


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_every_script_writes_through_the_one_writer(script):
    """It calls ``_results.start`` and ``_results.write_result`` (as attributes of the module
    or imported from it) and writes no JSON itself."""
    text = script.read_text()
    tree = ast.parse(text)
    imported = {
        alias.asname or alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module == "benchmarks._results"
        for alias in node.names
    }
    calls = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        if isinstance(func, ast.Attribute) and getattr(func.value, "id", None) == "_results":
            calls.add(func.attr)
        elif isinstance(func, ast.Name) and func.id in imported:
            calls.add(func.id)
    assert {"start", "write_result"} <= calls, f"{script.name} calls {sorted(calls)}"
    assert "write_text(" not in text and "json.dump(" not in text, f"{script.name} writes itself"


def test_write_result_records_the_run(tmp_path, monkeypatch):
    run = _results.start(BENCHMARKS / "fit_speed.py", ["--n", "10"])
    path = _results.write_result(run, {"value": 1.5}, tmp_path / "sub" / "out.json")
    saved = json.loads(path.read_text())
    assert saved["value"] == 1.5
    check_provenance(saved["provenance"])
    assert saved["provenance"]["command"] == "python -m benchmarks.fit_speed --n 10"
    assert saved["provenance"]["script"] == "benchmarks/fit_speed.py"
    # the default place is benchmarks/results/<script>.json
    monkeypatch.setattr(_results, "RESULTS_DIR", tmp_path / "results")
    assert _results.write_result(run, {}) == tmp_path / "results" / "fit_speed.json"


def test_dirty_means_changed_code_not_changed_results(tmp_path, monkeypatch):
    # a checkout of our layout; a benchmark run after another finds the other's JSON changed
    def git(*args):
        subprocess.run(["git", "-C", str(tmp_path), *args], check=True, capture_output=True)

    for name in ("benchmarks/results/a.json", "benchmarks/RESULTS.md", "stablekeras/x.py"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("1\n")
    git("init", "-q")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "start")
    monkeypatch.setattr(_results, "ROOT", tmp_path)
    assert _results.versions()["stablekeras_git_dirty"] is False
    (tmp_path / "benchmarks/results/a.json").write_text("2\n")
    (tmp_path / "benchmarks/RESULTS.md").write_text("2\n")
    assert _results.versions()["stablekeras_git_dirty"] is False
    (tmp_path / "stablekeras/x.py").write_text("2\n")
    assert _results.versions()["stablekeras_git_dirty"] is True


@needs_mnist
def test_a_script_run_end_to_end_writes_its_provenance(tmp_path):
    from benchmarks import fit_speed

    out = tmp_path / "fit_speed.json"
    argv = [
        "--n",
        "64",
        "--epochs",
        "1",
        "--pairs",
        "1",
        "--enforcements",
        "normalize",
        "--out",
        str(out),
    ]
    returned = fit_speed.main(argv)
    saved = json.loads(out.read_text())
    assert saved == json.loads(json.dumps(returned))
    check_provenance(saved["provenance"])
    assert saved["provenance"]["command"] == shlex.join(
        ["python", "-m", "benchmarks.fit_speed", *argv]
    )
    assert saved["n_images"] == 64 and saved["enforcement"]["normalize"]["ratio"]["median"] > 0
