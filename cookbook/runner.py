"""Execute the notebooks with papermill for a profile and check what they produced.

One runner serves the tests, the README's demo, CPU CI and the NPU workflow::

    python -m cookbook run-notebooks --profile cpu
    python -m cookbook run-notebooks --profile npu --model internvl3-8b

``notebooks/manifest.toml`` says, per notebook and profile, which parameters to inject,
the per-cell timeout, what to check, and why a notebook is skipped. Each notebook is
executed with the generic ``python3`` kernel named explicitly, its executed copy and its
results record are kept under the output folder, and one line per notebook is printed.
"""

from __future__ import annotations

import json
import os
import sys
import time
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from cookbook.checks import check_executed
from cookbook.engine import output_to_file

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS = REPO / "notebooks"
MANIFEST = NOTEBOOKS / "manifest.toml"
KERNEL = "python3"


@dataclass
class NotebookReport:
    """Outcome of one notebook in a run.

    Attributes:
        name: notebook stem, e.g. ``"01_single_image"``.
        status: ``"passed"``, ``"failed"`` or ``"skipped"``.
        seconds: wall time of the execution (0 when skipped).
        reason: why it failed or was skipped ("" when it passed).
        failures: every failed check.
        executed: path of the executed notebook (with outputs).
        record: path of its results record.
        parameters: the parameters injected by papermill.
    """

    name: str
    status: str
    seconds: float = 0.0
    reason: str = ""
    failures: list[str] = field(default_factory=list)
    executed: str = ""
    record: str = ""
    parameters: dict[str, Any] = field(default_factory=dict)

    def line(self) -> str:
        """Return the one-line summary printed for this notebook."""
        head = f"{self.status.upper():7s} {self.name:28s} {self.seconds:7.1f} s"
        return f"{head}  {self.reason}" if self.reason else head


def load_manifest(path: str | Path = MANIFEST) -> dict[str, Any]:
    """Return the notebook manifest, validated.

    Raises:
        FileNotFoundError: no manifest at ``path``.
        ValueError: a notebook entry lacks ``name`` or names a missing notebook file.
    """
    path = Path(path)
    data = tomllib.loads(path.read_text())
    for entry in data.get("notebooks", []):
        if "name" not in entry:
            raise ValueError(f"{path}: every [[notebooks]] entry needs a name")
        if not (path.parent / f"{entry['name']}.ipynb").exists():
            raise ValueError(f"{path}: notebook {entry['name']}.ipynb does not exist")
    return data


def plan_parameters(
    manifest: Mapping[str, Any],
    entry: Mapping[str, Any],
    profile: str,
    *,
    model: str | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Return the parameters to inject into one notebook for a profile.

    Order: the profile's parameters, the notebook's parameters for that profile, ``model``
    (``--model``), then ``overrides`` (``-p NAME VALUE``).
    """
    params: dict[str, Any] = dict(manifest["profiles"][profile].get("parameters", {}))
    params.update(entry.get("parameters", {}).get(profile, {}))
    if model:
        params["model"] = model
    params.update(overrides or {})
    return params


def run_notebooks(
    profile: str = "cpu",
    *,
    model: str | None = None,
    only: Sequence[str] = (),
    out_dir: str | Path = "build/notebooks",
    manifest_path: str | Path = MANIFEST,
    overrides: Mapping[str, Any] | None = None,
    log: Callable[[str], None] = print,
) -> list[NotebookReport]:
    """Execute the manifest's notebooks for a profile and check each one.

    Args:
        profile: a key of ``[profiles]`` in the manifest (``"cpu"`` or ``"npu"``).
        model: model for every notebook (a support-matrix key, hub id or path); the
            profile's default when ``None``.
        only: notebook names (or prefixes such as ``"01"``) to run; all when empty.
        out_dir: where executed notebooks (``NAME.ipynb``) and records (``NAME.json``) go.
        manifest_path: the manifest to read.
        overrides: parameters injected into every notebook last.
        log: called with one line per notebook and a summary line.

    Returns:
        One `NotebookReport` per notebook in the manifest (or in ``only``), in order.
        A report ``run.json`` is written beside the outputs.

    Raises:
        ValueError: unknown profile, or ``only`` matches no notebook.
    """
    import nbformat
    import papermill

    manifest = load_manifest(manifest_path)
    profiles = manifest.get("profiles", {})
    if profile not in profiles:
        raise ValueError(f"unknown profile {profile!r}; the manifest has {sorted(profiles)}")
    entries = list(manifest.get("notebooks", []))
    if only:
        entries = [e for e in entries if any(e["name"].startswith(o) for o in only)]
        if not entries:
            raise ValueError(f"no notebook matches {list(only)}")
    nb_dir = Path(manifest_path).resolve().parent
    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    # The kernel is a child process: it finds `cookbook` through PYTHONPATH.
    os.environ["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p
    )
    kind = profiles[profile].get("checks", "structure")
    expected_words = manifest.get("expected_words", {})
    reports = []
    for entry in entries:
        name = entry["name"]
        skip = entry.get("skip", {}).get(profile)
        if skip:
            rep = NotebookReport(name, "skipped", reason=str(skip))
            reports.append(rep)
            log(rep.line())
            continue
        params = plan_parameters(manifest, entry, profile, model=model, overrides=overrides)
        record_path = out / f"{name}.json"
        if record_path.exists():
            record_path.unlink()
        params["results_path"] = str(record_path)
        executed = out / f"{name}.ipynb"
        timeout = int(entry.get("timeout", manifest.get("timeout", 900)))
        t0 = time.perf_counter()
        raised = ""
        try:
            # The kernel inherits this process's stdout/stderr; what it prints outside the
            # cells (its own warnings, exit noise) goes to a log beside the notebook.
            with output_to_file(out / f"{name}.kernel.log"):
                papermill.execute_notebook(
                    str(nb_dir / f"{name}.ipynb"),
                    str(executed),
                    parameters=params,
                    kernel_name=KERNEL,
                    cwd=str(nb_dir),
                    execution_timeout=timeout,
                    start_timeout=120,
                    progress_bar=False,
                    log_output=False,
                )
        except Exception as exc:  # papermill raises PapermillExecutionError and others
            lines = str(exc).strip().splitlines() or [""]
            raised = f"{type(exc).__name__}: {lines[-1][:300]}"
        seconds = time.perf_counter() - t0
        failures = [raised] if raised else []
        nb = nbformat.read(str(executed), as_version=4) if executed.exists() else {}
        record = None
        if record_path.exists():
            record = json.loads(record_path.read_text())
        injected = {k: v for k, v in params.items() if k != "results_path"}
        failures += check_executed(
            nb,
            record,
            injected=injected,
            kind=kind,
            expected_words=expected_words,
            min_output_tokens=int(entry.get("min_output_tokens", 1)),
            require_results=bool(entry.get("results", True)),
        )
        failures = list(dict.fromkeys(failures))  # papermill's error repeats the cell's
        rep = NotebookReport(
            name,
            "failed" if failures else "passed",
            seconds=seconds,
            reason="; ".join(failures[:3]),
            failures=failures,
            executed=str(executed),
            record=str(record_path) if record is not None else "",
            parameters=injected,
        )
        reports.append(rep)
        log(rep.line())
    counts = {s: sum(r.status == s for r in reports) for s in ("passed", "failed", "skipped")}
    log(
        f"notebooks ({profile}): {counts['passed']} passed, {counts['failed']} failed, "
        f"{counts['skipped']} skipped"
    )
    (out / "run.json").write_text(
        json.dumps({"profile": profile, "reports": [asdict(r) for r in reports]}, indent=2)
    )
    return reports


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``python -m cookbook run-notebooks``; return 1 when any notebook failed."""
    import argparse

    ap = argparse.ArgumentParser(prog="cookbook run-notebooks", description=__doc__.split("\n")[0])
    add_arguments(ap)
    args = ap.parse_args(argv)
    return run_from_args(args)


def add_arguments(ap: Any) -> None:
    """Add the runner's command-line options to an ``argparse`` parser."""
    ap.add_argument("--profile", default="cpu", help="profile in notebooks/manifest.toml")
    ap.add_argument("--model", default=None, help="model for every notebook")
    ap.add_argument("--only", nargs="*", default=(), help="notebook names or prefixes")
    ap.add_argument("--out", default="build/notebooks", help="output folder")
    ap.add_argument(
        "-p",
        "--parameter",
        nargs=2,
        action="append",
        default=[],
        metavar=("NAME", "VALUE"),
        help="inject a parameter into every notebook (VALUE parsed as JSON when it can be)",
    )


def run_from_args(args: Any) -> int:
    """Run the notebooks as parsed command-line arguments ask; return the exit status."""
    overrides = {}
    for name, value in args.parameter:
        try:
            overrides[name] = json.loads(value)
        except json.JSONDecodeError:
            overrides[name] = value
    reports = run_notebooks(
        args.profile, model=args.model, only=args.only, out_dir=args.out, overrides=overrides
    )
    return 1 if any(r.status == "failed" for r in reports) else 0


if __name__ == "__main__":
    sys.exit(main())
