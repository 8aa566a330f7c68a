"""The NPU container scripts in env/npu, checked on a machine without an NPU.

The scripts run for real here: run-container.sh and install-cookbook.sh through their
--dry-run, check-npu.sh down to its "no NPU here" answer (and, with a stand-in npu-smi,
through its Python checks), the env file through both of its readers.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
NPU_DIR = REPO / "env" / "npu"
RUN_CONTAINER = NPU_DIR / "run-container.sh"
CHECK_NPU = NPU_DIR / "check-npu.sh"
INSTALL = NPU_DIR / "install-cookbook.sh"
ENV_FILE = NPU_DIR / "npu.env"
SCRIPTS = [RUN_CONTAINER, CHECK_NPU, INSTALL]
BASH = shutil.which("bash") or "/bin/bash"

# The variables of vllm-ascend's InternVL tutorial and CI jobs.
SEED_ENV = {
    "VLLM_USE_MODELSCOPE": "True",
    "PYTORCH_NPU_ALLOC_CONF": "max_split_size_mb:256",
    "VLLM_WORKER_MULTIPROC_METHOD": "spawn",
}
CONTROL_DEVICES = ["/dev/davinci_manager", "/dev/devmm_svm", "/dev/hisi_hdc"]
DRIVER_MOUNTS = [
    "/usr/local/dcmi:/usr/local/dcmi",
    "/usr/local/bin/npu-smi:/usr/local/bin/npu-smi",
    "/usr/local/Ascend/driver/lib64/:/usr/local/Ascend/driver/lib64/",
    "/usr/local/Ascend/driver/version.info:/usr/local/Ascend/driver/version.info",
    "/etc/ascend_install.info:/etc/ascend_install.info",
]


def pinned_npu_stack() -> dict:
    with open(REPO / "pyproject.toml", "rb") as fh:
        return tomllib.load(fh)["tool"]["cookbook"]["stack"]["npu"]


def run_script(
    script: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if k != "IMAGE"}
    full_env.update(env or {})
    return subprocess.run(
        [BASH, str(script), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=full_env,
        stdin=subprocess.DEVNULL,
    )


def docker_args(*args: str, env: dict[str, str] | None = None) -> list[str]:
    """The argv that run-container.sh --dry-run prints, parsed back with shlex."""
    result = run_script(RUN_CONTAINER, "--dry-run", *args, env=env)
    assert result.returncode == 0, result.stderr
    # As a shell reads it: backslash-newline continues the line.
    argv = shlex.split(result.stdout.replace("\\\n", " "))
    assert argv[:2] == ["docker", "run"], result.stdout
    return argv


def option_values(argv: list[str], option: str) -> list[str]:
    return [argv[i + 1] for i, arg in enumerate(argv[:-1]) if arg == option]


def parse_env_file(path: Path) -> dict[str, str]:
    values = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        # docker --env-file takes each line literally: no quotes, no export, no spaces.
        match = re.fullmatch(r"([A-Z_][A-Z0-9_]*)=(\S+)", line)
        assert match, f"{path.name}:{number} is not KEY=VALUE: {line!r}"
        values[match.group(1)] = match.group(2)
    return values


# --- every script -------------------------------------------------------------------


def test_the_npu_folder_holds_the_documented_files():
    names = {p.name for p in NPU_DIR.iterdir()}
    assert {"run-container.sh", "check-npu.sh", "install-cookbook.sh", "npu.env"} <= names
    assert "README.md" in names


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_script_parses_with_bash_n(script):
    result = subprocess.run([BASH, "-n", str(script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_script_is_strict_and_answers_help(script):
    text = script.read_text()
    assert text.startswith("#!/usr/bin/env bash\n")
    assert "set -euo pipefail" in text
    result = run_script(script, "--help")
    assert result.returncode == 0, result.stderr
    assert "Usage:" in result.stdout


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_script_rejects_an_unknown_option(script):
    result = run_script(script, "--no-such-option")
    assert result.returncode != 0
    assert "--no-such-option" in result.stderr


# --- run-container.sh ---------------------------------------------------------------


def test_dry_run_prints_the_seed_docker_command():
    argv = docker_args()
    devices = option_values(argv, "--device")
    assert devices == ["/dev/davinci0", *CONTROL_DEVICES]
    mounts = option_values(argv, "-v")
    for mount in DRIVER_MOUNTS:
        assert mount in mounts
    assert f"{REPO}:/workspace/cookbook" in mounts
    assert f"{Path.home()}/.cache:/root/.cache" in mounts
    assert option_values(argv, "-p") == ["8000:8000"]
    assert option_values(argv, "--env-file") == [str(ENV_FILE)]
    assert option_values(argv, "--name") == ["vllm-ascend-internvl"]
    assert "--rm" in argv
    # The image comes right before the command, which defaults to an interactive bash.
    assert argv[-2:] == [pinned_npu_stack()["image"], "bash"]


def test_dry_run_image_default_is_the_pyproject_pin():
    image = pinned_npu_stack()["image"]
    assert image.startswith("quay.io/ascend/vllm-ascend:")
    assert image in docker_args()


def test_dry_run_image_can_be_overridden_with_IMAGE():
    argv = docker_args(env={"IMAGE": "registry.example/vllm-ascend:test"})
    assert argv[-2] == "registry.example/vllm-ascend:test"
    assert pinned_npu_stack()["image"] not in argv


def test_dry_run_respects_device_port_name_cache(tmp_path):
    argv = docker_args(
        "--device", "3", "--port", "18000", "--name", "box", "--cache", str(tmp_path)
    )
    assert option_values(argv, "--device")[0] == "/dev/davinci3"
    assert "/dev/davinci0" not in argv
    assert option_values(argv, "-p") == ["18000:8000"]
    assert option_values(argv, "--name") == ["box"]
    assert f"{tmp_path}:/root/.cache" in option_values(argv, "-v")


def test_dry_run_passes_the_trailing_command_into_the_container():
    argv = docker_args("--device=1", "--", "python", "-m", "cookbook", "demo", "--question", "a b")
    image_at = argv.index(pinned_npu_stack()["image"])
    assert argv[image_at + 1 :] == ["python", "-m", "cookbook", "demo", "--question", "a b"]
    assert "/dev/davinci1" in argv


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--device", "x"], "--device must be a card number"),
        (["--device", "-1"], "--device must be a card number"),
        (["--port", "0"], "--port must be a number from 1 to 65535"),
        (["--port", "70000"], "--port must be a number from 1 to 65535"),
        (["--device"], "--device needs a card number"),
    ],
)
def test_bad_options_fail_with_a_clear_message(args, message):
    result = run_script(RUN_CONTAINER, "--dry-run", *args)
    assert result.returncode != 0
    assert message in result.stderr


def test_without_docker_it_says_so(tmp_path):
    # An empty PATH: no docker (the script needs nothing else before that check).
    result = run_script(RUN_CONTAINER, env={"PATH": str(tmp_path)})
    assert result.returncode != 0
    assert "docker not found" in result.stderr
    assert "--dry-run" in result.stderr


def test_missing_npu_device_is_a_clear_error(tmp_path):
    # A stand-in docker that records its call: it must never be reached.
    calls = tmp_path / "calls"
    docker = tmp_path / "docker"
    docker.write_text(f'#!/bin/sh\necho "$@" >> {calls}\n')
    docker.chmod(0o755)
    result = run_script(
        RUN_CONTAINER, "--device", "97", env={"PATH": f"{tmp_path}:{os.environ['PATH']}"}
    )
    assert result.returncode != 0
    assert "/dev/davinci97 not found" in result.stderr
    assert not calls.exists()


# --- npu.env ------------------------------------------------------------------------


def test_env_file_is_key_value_lines_with_the_seed_variables():
    values = parse_env_file(ENV_FILE)
    for key, value in SEED_ENV.items():
        assert values.get(key) == value
    # Offline mode is documented but left off: the first run downloads the weights.
    assert "HF_HUB_OFFLINE" not in values
    assert "# HF_HUB_OFFLINE=1" in ENV_FILE.read_text()
    assert "expandable_segments:True" in ENV_FILE.read_text()


def test_env_file_sources_in_bash_to_the_same_values():
    script = f"set -a; . {shlex.quote(str(ENV_FILE))}; set +a; env -0"
    result = subprocess.run(
        [BASH, "-c", script], capture_output=True, text=True, env={"PATH": os.environ["PATH"]}
    )
    assert result.returncode == 0, result.stderr
    exported = dict(item.split("=", 1) for item in result.stdout.split("\0") if "=" in item)
    for key, value in parse_env_file(ENV_FILE).items():
        assert exported.get(key) == value


# --- check-npu.sh -------------------------------------------------------------------


def path_without_npu_smi() -> str:
    dirs = [d for d in os.environ["PATH"].split(os.pathsep) if d]
    assert shutil.which("npu-smi", path=os.pathsep.join(dirs)) is None, (
        "this test expects a machine without an Ascend NPU"
    )
    return os.pathsep.join(dirs)


def test_check_npu_without_npu_fails_fast_with_a_clear_message():
    start = time.monotonic()
    result = run_script(CHECK_NPU, env={"PATH": path_without_npu_smi()}, timeout=30)
    elapsed = time.monotonic() - start
    assert result.returncode == 2
    assert "FAIL  npu-smi info" in result.stdout
    assert "npu-smi not found: this is not an Ascend NPU machine / container" in result.stdout
    assert "env/npu/run-container.sh" in result.stdout
    assert elapsed < 5, f"took {elapsed:.1f} s; it must not import torch or vllm first"


def test_check_npu_json_without_npu():
    result = run_script(CHECK_NPU, "--json", env={"PATH": path_without_npu_smi()}, timeout=30)
    assert result.returncode == 2
    report = json.loads(result.stdout)
    assert report["ok"] is False
    assert report["no_npu"] is True
    assert [c["status"] for c in report["checks"]] == ["FAIL"]
    assert "not an Ascend NPU machine" in report["checks"][0]["fix"]


def test_check_npu_python_checks_fail_one_by_one_off_npu(tmp_path):
    """With a stand-in npu-smi the script goes on to its Python checks.

    This Python has no torch_npu and no vllm_ascend, so those checks fail, each with a fix,
    and vLLM (when installed, as in the CPU stack) reports a platform other than "npu".
    """
    fake = tmp_path / "npu-smi"
    fake.write_text("#!/bin/sh\necho 'stand-in npu-smi'\n")
    fake.chmod(0o755)
    env = {
        "PATH": f"{tmp_path}{os.pathsep}{os.environ['PATH']}",
        "PYTHON": sys.executable,
        "VLLM_LOGGING_LEVEL": "ERROR",
    }
    result = run_script(CHECK_NPU, "--json", env=env, timeout=240)
    assert result.returncode == 1, result.stderr
    report = json.loads(result.stdout)
    status = {c["name"]: c["status"] for c in report["checks"]}
    assert report["ok"] is False
    assert status["npu-smi info"] == "PASS"
    assert status["torch_npu imports"] == "FAIL"
    assert status["vllm_ascend imports"] == "FAIL"
    if status["vllm imports"] == "PASS":
        assert status["vLLM platform is NPU (vllm_ascend plugin loaded)"] == "FAIL"
    assert all(c["fix"] for c in report["checks"] if c["status"] == "FAIL")
    assert set(report["versions"]) >= {
        "vllm",
        "vllm_ascend",
        "torch",
        "torch_npu",
        "transformers",
        "cann",
    }
    assert report["versions"]["torch_npu"] is None


def test_check_npu_text_report_has_one_line_per_check(tmp_path):
    fake = tmp_path / "npu-smi"
    fake.write_text("#!/bin/sh\necho 'npu-smi: no device'; exit 3\n")
    fake.chmod(0o755)
    # A Python without torch or vllm keeps this quick.
    bare_python = shutil.which("python3", path="/usr/bin:/usr/local/bin") or "python3"
    env = {"PATH": f"{tmp_path}{os.pathsep}{os.environ['PATH']}", "PYTHON": bare_python}
    result = run_script(CHECK_NPU, env=env, timeout=60)
    assert result.returncode == 1
    lines = [line for line in result.stdout.splitlines() if re.match(r"(PASS|FAIL|WARN) ", line)]
    assert lines[0].startswith("FAIL  npu-smi info: exit 3")
    assert any(line.startswith("FAIL  vllm_ascend imports") for line in lines)
    assert "fix: " in result.stdout
    assert "versions: " in result.stdout


# --- install-cookbook.sh ------------------------------------------------------------


def test_install_dry_run_prints_no_deps_and_a_constraints_file():
    result = run_script(INSTALL, "--dry-run")
    assert result.returncode == 0, result.stderr
    commands = [
        shlex.split(line) for line in result.stdout.splitlines() if not line.startswith("#")
    ]
    cookbook = next(c for c in commands if "-e" in c)
    assert cookbook[1:] == ["-m", "pip", "install", "--no-deps", "-e", str(REPO)]
    tools = next(c for c in commands if "--constraint" in c)
    assert tools[1:4] == ["-m", "pip", "install"]
    assert tools[tools.index("--constraint") + 1].endswith("constraints.txt")
    # The notebook tools are the `notebooks` extra of pyproject.toml, nothing from the stack.
    with open(REPO / "pyproject.toml", "rb") as fh:
        extra = tomllib.load(fh)["project"]["optional-dependencies"]["notebooks"]
    requested = tools[tools.index("--constraint") + 2 :]
    assert requested == extra
    names = {re.split(r"[<>=!~ \[]", r, maxsplit=1)[0].lower() for r in requested}
    assert {"papermill", "nbclient", "ipykernel", "jupyterlab", "scikit-image"} <= names
    assert "matplotlib" in names
    assert not names & {"torch", "torch-npu", "vllm", "vllm-ascend", "transformers"}
    assert "torch-npu" in result.stdout and "vllm-ascend" in result.stdout


def test_install_dry_run_pins_what_is_installed():
    # The CPU stack (this Python) has torch and transformers: both land in the constraints.
    result = run_script(INSTALL, "--dry-run", env={"PYTHON": sys.executable})
    assert result.returncode == 0, result.stderr
    pinned = re.findall(r"^#   (\S+)==(\S+)$", result.stdout, flags=re.MULTILINE)
    from importlib.metadata import PackageNotFoundError, version

    for name in ("torch", "transformers", "numpy"):
        try:
            expected = version(name)
        except PackageNotFoundError:
            continue
        assert (name, expected) in pinned


def test_install_refuses_to_run_outside_the_container(tmp_path):
    # A venv without pip: even a wrong turn in the script could not install anything.
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    result = run_script(INSTALL, env={"PYTHON": str(venv / "bin" / "python")})
    assert result.returncode != 0
    assert "torch-npu is not installed" in result.stderr
    assert "vllm-ascend container" in result.stderr


# --- README -------------------------------------------------------------------------


def test_readme_gives_the_commands_in_order():
    text = (NPU_DIR / "README.md").read_text()
    steps = [
        "bash env/npu/run-container.sh --device 0",
        "bash env/npu/check-npu.sh",
        "bash env/npu/install-cookbook.sh",
        "python -m cookbook run-notebooks --profile npu --model internvl3-8b --out build/notebooks",
    ]
    positions = [text.index(step) for step in steps]
    assert positions == sorted(positions)
    assert pinned_npu_stack()["image"] in text
