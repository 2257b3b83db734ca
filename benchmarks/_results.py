"""The one writer of the benchmarks' JSON: the numbers and where they come from.

Every script in ``benchmarks/`` calls :func:`start` when it begins (the load
average then, the command) and :func:`write_result` at the end. The JSON gains a
``"provenance"`` record:

* ``command``: how to run it again (``python -m benchmarks.NAME ARGS``), and
  ``invoked_as``, the interpreter's own command line (``sys.orig_argv``);
* ``script``: the script's path in the repository (``benchmarks/NAME.py``);
* ``started_utc`` and ``date_utc`` (the end), ISO 8601 in UTC;
* ``machine``: platform, processor, CPU cores and memory;
* ``load_average``: the 1, 5 and 15 minute load averages at the start and the end;
* ``versions``: python, tensorflow, keras, scikit-learn, numpy, cleverhans and
  stablekeras, with the git commit of the checkout (and whether it had
  uncommitted changes to anything but the results themselves, ``benchmarks/results/``
  and ``benchmarks/RESULTS.md``, so that a run after another is not called dirty for
  the other's JSON) when there is one.

``tests/test_results_provenance.py`` checks every JSON under ``benchmarks/results``
for these fields and that the script exists.
"""

from __future__ import annotations

import datetime
import importlib.metadata
import json
import os
import platform
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = ROOT / "benchmarks" / "results"

#: The fields every provenance record has (the test checks them).
PROVENANCE_FIELDS = (
    "command",
    "invoked_as",
    "script",
    "started_utc",
    "date_utc",
    "machine",
    "load_average",
    "versions",
)
#: What a run reports into, which does not make the checkout dirty (git pathspecs).
NOT_CODE = (":(exclude)benchmarks/results", ":(exclude)benchmarks/RESULTS.md")
#: The distributions whose versions are recorded.
PACKAGES = ("tensorflow", "keras", "scikit-learn", "numpy", "cleverhans", "stablekeras")


def _utc_now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


def _load_average() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:  # not available on this platform
        return None


@dataclass
class Run:
    """What :func:`start` records: the script, its arguments, the start time and load."""

    script: Path
    argv: list[str]
    started_utc: str = field(default_factory=_utc_now)
    load_average_start: list[float] | None = field(default_factory=_load_average)


def start(script: str | os.PathLike, argv: list[str] | None = None) -> Run:
    """Note the start of a benchmark run: call it first thing in ``main``.

    Parameters
    ----------
    script : path
        The script's ``__file__``.
    argv : list of str or None
        The arguments ``main`` parses (``None``: ``sys.argv[1:]``).
    """
    return Run(Path(script).resolve(), list(sys.argv[1:] if argv is None else argv))


def _memory_gib() -> float | None:
    try:
        return round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        return None


def machine() -> dict:
    """Platform, processor, CPU cores and memory of this machine."""
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_cores": os.cpu_count(),
        "memory_gib": _memory_gib(),
    }


def _git(*args) -> str | None:
    try:
        out = subprocess.run(
            ["git", "-C", str(ROOT), *args], capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def versions() -> dict:
    """Python and the packages' versions, and the git commit of this checkout."""
    found = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = None
    commit = _git("rev-parse", "HEAD")
    found["stablekeras_git_commit"] = commit
    if commit is not None:
        status = _git("status", "--porcelain", "--untracked-files=no", "--", ".", *NOT_CODE)
        found["stablekeras_git_dirty"] = bool(status)
    return found


def provenance(run: Run) -> dict:
    """The provenance record of ``run``, ended now."""
    try:
        script = run.script.relative_to(ROOT).as_posix()
    except ValueError:
        script = str(run.script)
    module = script[:-3].replace("/", ".") if script.endswith(".py") else script
    return {
        "command": shlex.join(["python", "-m", module, *run.argv]),
        "invoked_as": shlex.join(getattr(sys, "orig_argv", sys.argv)),
        "script": script,
        "started_utc": run.started_utc,
        "date_utc": _utc_now(),
        "machine": machine(),
        "load_average": {"start": run.load_average_start, "end": _load_average()},
        "versions": versions(),
    }


def write_result(run: Run, result: dict, out: str | os.PathLike | None = None) -> Path:
    """Write ``result`` with its provenance as JSON and return the path.

    Parameters
    ----------
    run : Run
        From :func:`start`.
    result : dict
        The numbers (JSON-able); it gains the key ``"provenance"``.
    out : path or None
        The file; ``None`` is ``benchmarks/results/<script name>.json``. A
        relative path is taken from the working directory.
    """
    path = RESULTS_DIR / f"{run.script.stem}.json" if out is None else Path(out)
    result["provenance"] = provenance(run)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    return path
