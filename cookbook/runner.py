"""Execute the notebooks with papermill for a profile, and check what each one produced.

``notebooks/manifest.toml`` holds each profile's parameters and each notebook's timeout, extra
parameters and skips. Each runs on the ``python3`` kernel; its executed copy, results file and
kernel output (``NAME.kernel.log``) land in the output folder. The checks, on every profile: no
cell raised; results have output tokens and the planned image tokens; each answer ends with
``stop``, names each photo asked about (a word of ``samples.toml``, in image order), puts boxes
on their objects, parses as JSON where asked, and chat turns come in order.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from cookbook import images

REPO = Path(__file__).resolve().parent.parent
MANIFEST = REPO / "notebooks" / "manifest.toml"
KERNEL = "python3"
#: Least overlap (intersection over union) of a grounding box with its annotated object.
MIN_IOU = 0.5


@dataclass
class Report:
    """How one notebook did: ``status`` is ``"passed"``, ``"failed"`` or ``"skipped"``."""

    name: str
    status: str
    seconds: float = 0.0
    failures: list[str] = field(default_factory=list)
    executed: str = ""
    record: str = ""

    def line(self) -> str:
        """Return the line printed for this notebook: status, name, seconds, first failures."""
        why = "; ".join(self.failures[:3])
        return f"{self.status.upper():7s} {self.name:26s} {self.seconds:6.1f} s  {why}".rstrip()


# ------------------------------------------------------------------------------ checks


def error_outputs(nb: Mapping[str, Any]) -> list[str]:
    """Return one failure per code-cell output of type ``error``."""
    return [
        f"cell {i} raised {out.get('ename')}: {str(out.get('evalue'))[:200]}"
        for i, cell in enumerate(nb.get("cells", []))
        for out in cell.get("outputs", [])
        if out.get("output_type") == "error"
    ]


def check_structure(result: Mapping[str, Any]) -> list[str]:
    """Return what is wrong with how one result ran (never its text)."""
    if result.get("error"):
        return [f"failed: {result['error'][:200]}"]
    found = []
    if result.get("finish_reason") not in ("stop", "length"):
        found.append(f"finish reason {result.get('finish_reason')!r}")
    if int(result.get("output_tokens", 0)) < 1:
        found.append("no output tokens")
    measured, planned = result.get("image_tokens"), result.get("planned_image_tokens")
    if measured is not None and planned is not None and measured != planned:
        found.append(f"vLLM used {measured} image tokens, the plan said {planned}")
    if measured and int(result.get("prompt_tokens", 0)) <= measured:
        found.append("prompt tokens not above image tokens")
    return found


def mentions(text: str, words: Sequence[str]) -> int | None:
    """Return where the first of ``words`` is in ``text`` as a whole word, any case; else None."""
    spots = [m.start() for w in words for m in [re.search(rf"\b{re.escape(w)}\b", text, re.I)] if m]
    return min(spots) if spots else None


def iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Return the intersection over union of two ``[x1, y1, x2, y2]`` boxes (0 when apart)."""
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h
    return w * h / union if union > 0 else 0.0


def check_content(result: Mapping[str, Any]) -> list[str]:
    """Return what is wrong with an answer: truncated, a photo not named, a box off its object."""
    if result.get("error"):
        return []
    found = []
    if result.get("finish_reason") != "stop":
        found.append(f"finish reason {result.get('finish_reason')!r}, not 'stop' (truncated?)")
    text = str(result.get("text", ""))
    extra = result.get("extra") or {}
    spots: list[int | None] = []
    for name in result.get("images", []) if "boxes" not in extra else []:
        words = images.samples().get(name, {}).get("words")
        if words:
            spots.append(mentions(text, words))
            if spots[-1] is None:
                found.append(f"the answer about {name!r} names none of {words}")
    known = [s for s in spots if s is not None]
    if len(known) == len(spots) and known != sorted(known):
        found.append(f"the answer names the photos out of order ({result.get('images')})")
    for box in extra.get("boxes", []):
        objects = images.samples().get(result["images"][0], {}).get("objects", [])
        label = str(box["label"]).removeprefix("the ")  # "<ref>the cat</ref>" is object "cat"
        truth = [o["box"] for o in objects if o["label"] == label]
        if not truth or iou(box["box"], truth[0]) < MIN_IOU:
            found.append(f"box {box['box']} for {box['label']!r} misses its object {truth}")
    if "json_error" in extra and extra["json_error"]:
        found.append(f"invalid JSON: {extra['json_error'][:200]}")
    return found


def check_record(nb: Mapping[str, Any], record: Mapping[str, Any] | None) -> list[str]:
    """Return every failure of one executed notebook and its results file."""
    failures = error_outputs(nb)
    if record is None:
        return [*failures, "the notebook wrote no results file"]
    failures += [str(f) for f in record.get("failures", [])]
    turns = [r["extra"]["turn"] for r in record.get("results", []) if "turn" in r.get("extra", {})]
    if turns and turns != list(range(1, len(turns) + 1)):
        failures.append(f"chat turns out of order or missing: {turns}")
    for i, result in enumerate(record.get("results", [])):
        failures += [f"result {i}: {f}" for f in check_structure(result) + check_content(result)]
    return failures


# ------------------------------------------------------------------------------ running


def parameters(
    manifest: Mapping[str, Any], entry: Mapping[str, Any], profile: str
) -> dict[str, Any]:
    """Return the parameters for one notebook: the profile's, then the notebook's for it."""
    return {**manifest["profiles"][profile]["parameters"], **entry.get(profile, {})}


def _execute(
    entry: Mapping[str, Any], params: Mapping[str, Any], out: Path, timeout: int
) -> Report:
    """Run one notebook with papermill's command line in its own process; check what it wrote."""
    name = entry["name"]
    record_path, executed = out / f"{name}.json", out / f"{name}.ipynb"
    record_path.unlink(missing_ok=True)
    params = {**params, "results_path": str(record_path)}
    command = [sys.executable, "-m", "papermill", str(MANIFEST.parent / f"{name}.ipynb")]
    command += [str(executed), "-k", KERNEL, "--cwd", str(MANIFEST.parent), "--no-progress-bar"]
    command += ["--execution-timeout", str(timeout), "--start-timeout", "120"]
    command += ["-y", json.dumps(params)]
    # Under pytest, ipykernel stops giving its stdout a file descriptor, which vLLM needs.
    env = {k: v for k, v in os.environ.items() if k != "PYTEST_CURRENT_TEST"}
    started = time.perf_counter()
    with (out / f"{name}.kernel.log").open("w") as log:
        done = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, env=env, check=False)
    nb = json.loads(executed.read_text()) if executed.exists() else {}
    record = json.loads(record_path.read_text()) if record_path.exists() else None
    failures = check_record(nb, record)
    if done.returncode and not error_outputs(nb):
        failures.insert(0, f"papermill exited with {done.returncode}; see {name}.kernel.log")
    status, seconds = "failed" if failures else "passed", time.perf_counter() - started
    return Report(
        name, status, seconds, failures, str(executed), str(record_path) if record else ""
    )


def run_notebooks(
    profile: str = "cpu",
    *,
    only: Sequence[str] = (),
    out_dir: str | Path = "build/notebooks",
    model: str | None = None,
    overrides: Mapping[str, Any] | None = None,
    jobs: int = 1,
    log: Callable[[str], None] = print,
) -> list[Report]:
    """Execute and check the manifest's notebooks for a profile; return one `Report` each.

    ``only``: names or prefixes (``"01"``), all when empty. ``model`` and then ``overrides`` are
    injected into every notebook. ``jobs`` notebooks run at once, then those marked ``alone``
    one at a time. ``log`` gets each notebook's line and a summary; ``out_dir`` also gets
    ``run.json``. Raises ValueError: unknown profile, or ``only`` matches no notebook.
    """
    manifest = tomllib.loads(MANIFEST.read_text())
    if profile not in manifest["profiles"]:
        known = sorted(manifest["profiles"])
        raise ValueError(f"unknown profile {profile!r}; the manifest has {known}")
    entries = [e for e in manifest["notebooks"] if not only or e["name"].startswith(tuple(only))]
    if not entries:
        raise ValueError(f"no notebook matches {list(only)}")
    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    os.environ["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(REPO), os.environ.get("PYTHONPATH")])
    )
    done: dict[str, Report] = {}

    def run(entry: Mapping[str, Any]) -> None:
        if profile in entry.get("skip", {}):
            report = Report(entry["name"], "skipped", failures=[entry["skip"][profile]])
        else:
            params = {**parameters(manifest, entry, profile), **({"model": model} if model else {})}
            timeout = int(entry.get("timeout", manifest["timeout"]))
            report = _execute(entry, {**params, **(overrides or {})}, out, timeout)
        done[entry["name"]] = report
        log(report.line())

    with ThreadPoolExecutor(max(1, jobs)) as pool:
        list(pool.map(run, [e for e in entries if not e.get("alone")]))
    for entry in (e for e in entries if e.get("alone")):
        run(entry)
    reports = [done[e["name"]] for e in entries]
    counts = {s: sum(r.status == s for r in reports) for s in ("passed", "failed", "skipped")}
    log(f"notebooks ({profile}): " + ", ".join(f"{n} {s}" for s, n in counts.items()))
    (out / "run.json").write_text(
        json.dumps({"profile": profile, "reports": [asdict(r) for r in reports]}, indent=2)
    )
    return reports


def add_arguments(ap: Any) -> None:
    """Add the runner's options to an argparse parser."""
    ap.add_argument("--profile", default="cpu", help="profile of notebooks/manifest.toml")
    ap.add_argument("--model", default=None, help="model for every notebook")
    ap.add_argument("--only", nargs="*", default=(), help="notebook names or prefixes")
    ap.add_argument("--out", default="build/notebooks", help="output folder")
    ap.add_argument("--jobs", type=int, default=1, help="notebooks run at once")
    ap.add_argument("-p", "--parameter", nargs=2, action="append", default=[],
                    metavar=("NAME", "VALUE"), help="inject a parameter into every notebook "
                    "(VALUE read as JSON where it parses)")  # fmt: skip


def run_from_args(args: Any) -> int:
    """Run the notebooks as the parsed options say; return 1 when any notebook failed."""
    overrides = {}
    for name, value in args.parameter:
        try:
            overrides[name] = json.loads(value)
        except json.JSONDecodeError:
            overrides[name] = value
    reports = run_notebooks(args.profile, only=args.only, out_dir=args.out, model=args.model,
                            overrides=overrides, jobs=args.jobs)  # fmt: skip
    return 1 if any(r.status == "failed" for r in reports) else 0
