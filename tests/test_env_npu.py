"""The NPU container scripts in env/npu, checked on a machine without an NPU.

The scripts run for real here: run-container.sh and install-cookbook.sh through their
--dry-run (and install-cookbook.sh up to its refusal outside the container), check-npu.sh
with a stand-in npu-smi through the Python check it wraps, the env file through both of
its readers, and every script through bash -n and shellcheck.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from test_envcheck import A3_TABLE, P310_TABLE, TABLES, stand_in_npu_smi

REPO = Path(__file__).resolve().parents[1]
NPU_DIR = REPO / "env" / "npu"
RUN_CONTAINER = NPU_DIR / "run-container.sh"
CHECK_NPU = NPU_DIR / "check-npu.sh"
INSTALL = NPU_DIR / "install-cookbook.sh"
ENV_FILE = NPU_DIR / "npu.env"
SCRIPTS = [RUN_CONTAINER, CHECK_NPU, INSTALL]
BASH = shutil.which("bash") or "/bin/bash"
PROTECTED = [
    *("torch", "torch-npu", "torchvision", "vllm", "vllm-ascend", "transformers", "numpy"),
    *("fastapi", "pydantic", "protobuf", "huggingface-hub", "tokenizers", "openai"),
    *("pillow", "modelscope"),
]
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


def extras() -> dict[str, list[str]]:
    with open(REPO / "pyproject.toml", "rb") as fh:
        return tomllib.load(fh)["project"]["optional-dependencies"]


def path_without_npu_smi() -> str:
    path = os.environ["PATH"]
    assert shutil.which("npu-smi", path=path) is None, "these tests expect a machine without an NPU"
    return path


def run_script(script: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 120):
    full_env = {k: v for k, v in os.environ.items() if k not in ("IMAGE", "PYTHONPATH")}
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
    """The argv that run-container.sh --dry-run prints, parsed back as a shell reads it."""
    result = run_script(RUN_CONTAINER, "--dry-run", *args, env=env)
    assert result.returncode == 0, result.stderr
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


# --- every script -----------------------------------------------------------------------


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_script_parses_with_bash_n(script):
    result = subprocess.run([BASH, "-n", str(script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


@pytest.mark.skipif(
    shutil.which("shellcheck") is None, reason="shellcheck not installed (make lint-ci installs it)"
)
def test_scripts_pass_shellcheck():
    result = subprocess.run(["shellcheck", *map(str, SCRIPTS)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_script_is_strict_and_answers_help(script):
    assert "set -euo pipefail" in script.read_text()
    result = run_script(script, "--help")
    assert result.returncode == 0, result.stderr
    assert "Usage:" in result.stdout


@pytest.mark.parametrize("script", [RUN_CONTAINER, INSTALL], ids=lambda p: p.name)
def test_script_rejects_an_unknown_option(script):
    result = run_script(script, "--no-such-option")
    assert result.returncode != 0
    assert "--no-such-option" in result.stderr


# --- run-container.sh -------------------------------------------------------------------


def test_dry_run_prints_upstreams_single_card_docker_command():
    argv = docker_args(env={"PATH": path_without_npu_smi()})
    assert option_values(argv, "--device") == ["/dev/davinci0", *CONTROL_DEVICES]
    mounts = option_values(argv, "-v")
    assert set(DRIVER_MOUNTS) <= set(mounts)
    assert f"{REPO}:/workspace/cookbook" in mounts
    assert f"{Path.home()}/.cache:/root/.cache" in mounts
    assert option_values(argv, "-p") == ["8000:8000"]
    assert option_values(argv, "--shm-size") == ["1g"]
    assert option_values(argv, "--env-file") == [str(ENV_FILE)]
    assert argv[-2:] == [pinned_npu_stack()["image"], "bash"]


@pytest.mark.parametrize(("table", "suffix"), [("A2", ""), ("A3", "-a3"), ("310P", "-310p")])
def test_the_image_follows_the_hosts_chip(tmp_path, table, suffix):
    stand_in_npu_smi(tmp_path, TABLES[table])
    result = run_script(
        RUN_CONTAINER, "--dry-run", env={"PATH": f"{tmp_path}:{os.environ['PATH']}"}
    )
    assert result.returncode == 0, result.stderr
    argv = shlex.split(result.stdout.replace("\\\n", " "))
    assert argv[-2] == pinned_npu_stack()["image"] + suffix
    assert ("#6082" in result.stderr) == (table == "310P")


def test_chip_can_be_named_and_a_bad_one_is_refused():
    assert docker_args("--chip", "a3")[-2].endswith("-a3")
    result = run_script(RUN_CONTAINER, "--dry-run", "--chip", "a9")
    assert result.returncode == 2 and "--chip must be a2, a3, 310p or auto" in result.stderr


def test_IMAGE_overrides_the_pin_and_the_chip(tmp_path):
    stand_in_npu_smi(tmp_path, A3_TABLE)
    env = {"IMAGE": "registry.example/vllm-ascend:test", "PATH": f"{tmp_path}:{os.environ['PATH']}"}
    assert docker_args(env=env)[-2] == "registry.example/vllm-ascend:test"


def test_dry_run_respects_device_port_name_cache(tmp_path):
    argv = docker_args(
        "--device", "3", "--port", "18000", "--name", "box", "--cache", str(tmp_path)
    )
    assert option_values(argv, "--device")[0] == "/dev/davinci3"
    assert option_values(argv, "-p") == ["18000:8000"]
    assert option_values(argv, "--name") == ["box"]
    assert f"{tmp_path}:/root/.cache" in option_values(argv, "-v")


def test_dry_run_passes_the_trailing_command_into_the_container():
    argv = docker_args("--chip", "a2", "--", "bash", "env/npu/check-npu.sh", "--model", "a b")
    image_at = argv.index(pinned_npu_stack()["image"])
    assert argv[image_at + 1 :] == ["bash", "env/npu/check-npu.sh", "--model", "a b"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--device", "x"], "--device must be a card number"),
        (["--port", "70000"], "--port must be a number from 1 to 65535"),
        (["--device"], "--device needs a card number"),
    ],
)
def test_bad_options_fail_with_a_clear_message(args, message):
    result = run_script(RUN_CONTAINER, "--dry-run", *args)
    assert result.returncode != 0
    assert message in result.stderr


def test_without_docker_it_says_so(tmp_path):
    result = run_script(RUN_CONTAINER, env={"PATH": f"{tmp_path}:/usr/bin:/bin"})
    assert result.returncode != 0
    assert "docker not found" in result.stderr


def test_missing_npu_device_is_a_clear_error_and_docker_is_not_called(tmp_path):
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


# --- npu.env ----------------------------------------------------------------------------


def test_env_file_sets_modelscope_and_spawn_and_leaves_the_allocator_alone():
    values = parse_env_file(ENV_FILE)
    assert values == {"VLLM_USE_MODELSCOPE": "True", "VLLM_WORKER_MULTIPROC_METHOD": "spawn"}
    text = ENV_FILE.read_text()
    # Unset on purpose, with the reason and the option for fragmentation.
    assert "expandable_segments:True" in text and "max_split_size_mb" in text
    assert "# HF_HUB_OFFLINE=1" in text


def test_env_file_sources_in_bash_to_the_same_values():
    script = f"set -a; . {shlex.quote(str(ENV_FILE))}; set +a; env -0"
    result = subprocess.run(
        [BASH, "-c", script], capture_output=True, text=True, env={"PATH": os.environ["PATH"]}
    )
    assert result.returncode == 0, result.stderr
    exported = dict(item.split("=", 1) for item in result.stdout.split("\0") if "=" in item)
    for key, value in parse_env_file(ENV_FILE).items():
        assert exported.get(key) == value
    assert "PYTORCH_NPU_ALLOC_CONF" not in exported


# --- check-npu.sh -----------------------------------------------------------------------


def test_check_npu_runs_the_python_check_on_a_310p_host(tmp_path):
    """A stand-in npu-smi for an Atlas 300I Duo, offline ModelScope and an empty cache."""
    stand_in_npu_smi(tmp_path, P310_TABLE)
    env = {
        "PATH": f"{tmp_path}:{os.environ['PATH']}",
        "PYTHON": sys.executable,
        "VLLM_USE_MODELSCOPE": "True",
        "HF_HUB_OFFLINE": "1",
        "MODELSCOPE_CACHE": str(tmp_path / "cache"),
    }
    result = run_script(CHECK_NPU, "--model", "internvl3-8b", env=env, timeout=300)
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert any(line.startswith("FAIL  device: device 'npu' was asked for") for line in lines)
    assert any(line.startswith("FAIL  chip: 310P3: Atlas 300I Duo") for line in lines)
    assert f"{pinned_npu_stack()['image']}-310p" in result.stdout
    assert "modelscope download --model OpenGVLab/InternVL3-8B" in result.stdout


def test_check_npu_without_a_python_says_so():
    result = run_script(CHECK_NPU, env={"PYTHON": "no-such-python"})
    assert result.returncode == 2
    assert "no-such-python not found" in result.stderr


# --- install-cookbook.sh ----------------------------------------------------------------


def dry_run(*args: str, python: str = sys.executable) -> tuple[list[str], list[list[str]]]:
    """The comment lines and the commands (shell-split) of install-cookbook.sh --dry-run."""
    result = run_script(INSTALL, "--dry-run", *args, env={"PYTHON": python})
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    comments = [line for line in lines if line.startswith("#")]
    return comments, [shlex.split(line) for line in lines if line and not line.startswith("#")]


def bare_python(tmp_path: Path) -> str:
    """A venv without pip, packages or setuptools: it cannot install anything."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    return str(venv / "bin" / "python")


def test_install_dry_run_lists_the_protected_set():
    comments, _ = dry_run()
    protected = next(c for c in comments if c.startswith("# protected"))
    assert set(PROTECTED) <= set(protected.split(":", 1)[1].split())


def test_install_dry_run_pins_what_is_installed():
    comments, _ = dry_run()
    pinned = dict(re.findall(r"^#   (\S+)==(\S+)$", "\n".join(comments), flags=re.M))
    from importlib.metadata import version

    for name in ("torch", "transformers", "numpy", "huggingface-hub", "openai", "pillow"):
        assert pinned.get(name) == version(name), name


def test_install_builds_the_cookbook_without_downloads():
    _, commands = dry_run()
    cookbook = next(c for c in commands if "-e" in c)
    assert cookbook[1:4] == ["-m", "pip", "install"]
    assert {"--no-deps", "--no-build-isolation", "--no-index"} <= set(cookbook)
    assert cookbook[-2:] == ["-e", str(REPO)]


def test_install_calls_no_pip_for_tools_that_are_there():
    # This Python (the CPU stack) has every notebook tool and lm-eval.
    comments, commands = dry_run("--accuracy")
    assert not any("--constraint" in c for c in commands)
    assert "# every notebook tool is installed already: pip is not called for them" in comments


def test_install_asks_only_for_the_tools_and_never_for_the_stack(tmp_path):
    comments, commands = dry_run("--accuracy", python=bare_python(tmp_path))
    tools = next(c for c in commands if "--constraint" in c)
    assert {"--no-build-isolation", "--prefer-binary"} <= set(tools)
    requested = tools[tools.index("--constraint") + 2 :]
    lm_eval = [r for r in extras()["dev"] if r.startswith("lm-eval")]
    assert requested == extras()["notebooks"] + lm_eval and lm_eval
    names = {re.split(r"[<>=!~ \[]", r, maxsplit=1)[0].lower() for r in requested}
    assert not names & {"torch", "torch-npu", "vllm", "vllm-ascend", "transformers", "numpy"}
    # No setuptools there: the checkout is used from PYTHONPATH instead of an install.
    assert "# no cookbook install; the checkout is used from PYTHONPATH:" in comments
    assert commands[0] == ["export", f"PYTHONPATH={REPO}${{PYTHONPATH:+:$PYTHONPATH}}"]


def test_install_pythonpath_installs_no_cookbook():
    comments, commands = dry_run("--pythonpath")
    assert not any("-e" in c for c in commands)
    assert commands[0][0] == "export"


def test_install_refuses_to_run_outside_the_container(tmp_path):
    result = run_script(INSTALL, env={"PYTHON": bare_python(tmp_path)})
    assert result.returncode != 0
    assert "torch-npu is not installed" in result.stderr
    assert "vllm-ascend container" in result.stderr


def fake_container_python(tmp_path: Path) -> str:
    """A venv that looks like the image to the script: the NPU stack and every notebook tool
    are 'installed' (package metadata only), pip is absent, so nothing can be downloaded."""
    import packaging

    python = bare_python(tmp_path)
    site = next((tmp_path / "venv" / "lib").glob("python3*/site-packages"))
    shutil.copytree(Path(packaging.__file__).parent, site / "packaging")
    wanted = [*extras()["notebooks"], "torch-npu>=2.10.0", "vllm>=0.23.0", "vllm-ascend>=0.23.0"]
    for requirement in wanted:
        name, version = re.match(r"([\w.-]+)(?:\[.*\])?(?:>=|==)?([\w.]*)", requirement).groups()
        folder = site / f"{name.replace('-', '_')}-{version or '1.0'}.dist-info"
        folder.mkdir()
        (folder / "METADATA").write_text(
            f"Metadata-Version: 2.1\nName: {name}\nVersion: {version or '1.0'}\n"
        )
    return python


def test_install_in_an_air_gapped_image_that_has_the_tools_downloads_nothing(tmp_path):
    result = run_script(INSTALL, env={"PYTHON": fake_container_python(tmp_path)})
    assert result.returncode == 0, result.stdout + result.stderr
    assert "== the notebook tools are installed already" in result.stdout
    assert "== cookbook not installed; use the checkout" in result.stdout  # no setuptools there
    assert "-m pip" not in result.stdout
    assert "== done; protected versions unchanged:" in result.stdout
    assert "vllm-ascend==0.23.0" in result.stdout
