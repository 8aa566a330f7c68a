"""The GitHub Actions workflows: what they run, on what, with which pins.

The NPU workflow cannot run here; these tests hold it to the same facts as the scripts a
person runs by hand (env/npu) and to the pins in pyproject.toml.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
WORKFLOWS = REPO / ".github" / "workflows"
MODELS = ["internvl2-8b", "internvl2.5-8b", "internvl3-8b"]
RUN_NOTEBOOKS = (
    "python -m cookbook run-notebooks --profile npu --model ${{ matrix.model }} "
    "--out build/notebooks"
)


def load(name: str) -> dict:
    workflow = yaml.safe_load((WORKFLOWS / name).read_text())
    # YAML 1.1 reads the key `on` as True.
    if True in workflow:
        workflow["on"] = workflow.pop(True)
    return workflow


def pinned_image() -> str:
    with open(REPO / "pyproject.toml", "rb") as fh:
        return tomllib.load(fh)["tool"]["cookbook"]["stack"]["npu"]["image"]


def fallback(expression: str, name: str) -> str:
    """The literal after `||` in `${{ <name> || '<literal>' }}`-style expressions."""
    match = re.search(re.escape(name) + r" \|\| '([^']*)'", expression)
    assert match, f"{expression!r} has no `{name} || '...'` default"
    return match.group(1)


def runs(job: dict) -> list[str]:
    return [step["run"] for step in job["steps"] if "run" in step]


def uses(job: dict, action: str) -> list[dict]:
    return [s for s in job["steps"] if s.get("uses", "").split("@")[0] == action]


def env_file_values() -> dict[str, str]:
    values = {}
    for line in (REPO / "env" / "npu" / "npu.env").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            values[key] = value
    return values


@pytest.fixture(scope="module")
def npu() -> dict:
    return load("npu.yml")


@pytest.fixture(scope="module")
def cpu() -> dict:
    return load("cpu.yml")


@pytest.fixture(scope="module")
def npu_job(npu) -> dict:
    assert list(npu["jobs"]) == ["notebooks"]
    return npu["jobs"]["notebooks"]


def test_both_workflows_exist_and_parse():
    assert {p.name for p in WORKFLOWS.glob("*.yml")} >= {"cpu.yml", "npu.yml"}
    for name in ("cpu.yml", "npu.yml"):
        workflow = load(name)
        assert workflow["name"] and workflow["jobs"] and workflow["on"]


@pytest.mark.parametrize("name", ["cpu.yml", "npu.yml"])
def test_every_action_is_pinned_to_a_version(name):
    for job in load(name)["jobs"].values():
        for step in job["steps"]:
            if "uses" in step:
                assert re.fullmatch(r"[\w.-]+/[\w.-]+@v\d+", step["uses"]), step["uses"]


# --- npu.yml ------------------------------------------------------------------------


def test_npu_triggers_are_manual_and_nightly(npu):
    assert set(npu["on"]) == {"workflow_dispatch", "schedule"}
    assert npu["on"]["schedule"][0]["cron"]


def test_npu_matrix_has_the_three_models(npu, npu_job):
    inputs = npu["on"]["workflow_dispatch"]["inputs"]
    assert json.loads(inputs["models"]["default"]) == MODELS
    expression = npu_job["strategy"]["matrix"]["model"]
    assert expression.startswith("${{ fromJSON(")
    # A scheduled run has no inputs: the fallback list is the one it runs.
    assert json.loads(fallback(expression, "inputs.models")) == MODELS
    assert npu_job["strategy"]["fail-fast"] is False


def test_npu_runs_on_the_runner_input_with_its_default(npu, npu_job):
    default = npu["on"]["workflow_dispatch"]["inputs"]["runner"]["default"]
    assert default == "linux-aarch64-a2b3-1"
    assert npu_job["runs-on"] == "${{ inputs.runner || 'linux-aarch64-a2b3-1' }}"


def test_npu_container_image_defaults_to_the_pyproject_pin(npu, npu_job):
    image = pinned_image()
    assert npu["on"]["workflow_dispatch"]["inputs"]["image"]["default"] == image
    assert fallback(npu_job["container"]["image"], "inputs.image") == image


def test_npu_container_gets_the_devices_and_mounts_of_run_container(npu_job):
    container = npu_job["container"]
    card = "${{ inputs.device || '0' }}"
    assert card in container["options"]
    options = container["options"].replace(card, "N").split()
    devices = [options[i + 1] for i, opt in enumerate(options[:-1]) if opt == "--device"]
    assert devices == ["/dev/davinciN", "/dev/davinci_manager", "/dev/devmm_svm", "/dev/hisi_hdc"]
    # The same driver mounts as the docker command a person runs.
    dry_run = subprocess.run(
        ["bash", str(REPO / "env" / "npu" / "run-container.sh"), "--dry-run"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    argv = shlex.split(dry_run.replace("\\\n", " "))
    host_mounts = {argv[i + 1] for i, arg in enumerate(argv[:-1]) if arg == "-v"}
    cache = "${{ inputs.cache || '/root/.cache' }}:/root/.cache"
    assert cache in container["volumes"]
    driver_mounts = {v for v in host_mounts if not v.endswith(":/root/.cache")}
    driver_mounts.discard(f"{REPO}:/workspace/cookbook")
    assert set(container["volumes"]) - {cache} == driver_mounts
    assert len(driver_mounts) == 5


def test_npu_container_env_matches_the_env_file(npu_job):
    env = {k: str(v) for k, v in npu_job["container"]["env"].items()}
    for key, value in env_file_values().items():
        assert env.get(key) == value, key
    assert env["VLLM_WORKER_MULTIPROC_METHOD"] == "spawn"
    assert env["MODELSCOPE_CACHE"].startswith("/root/.cache/")
    assert env["HF_HOME"].startswith("/root/.cache/")
    assert "inputs.offline" in env["HF_HUB_OFFLINE"]


def test_npu_steps_are_the_readme_commands_in_order(npu_job):
    commands = runs(npu_job)
    joined = "\n".join(commands)
    order = ["bash env/npu/check-npu.sh", "bash env/npu/install-cookbook.sh", RUN_NOTEBOOKS]
    positions = [joined.index(command) for command in order]
    assert positions == sorted(positions)
    assert any(RUN_NOTEBOOKS in line.split("\n") for line in commands)
    assert uses(npu_job, "actions/checkout")
    for command in order[:2]:
        assert (REPO / command.split()[1]).is_file()


def test_npu_uploads_the_notebooks_even_on_failure(npu_job):
    (upload,) = uses(npu_job, "actions/upload-artifact")
    assert upload["if"] == "always()"
    assert upload["with"]["path"] == "build/notebooks"
    assert "${{ matrix.model }}" in upload["with"]["name"]


def test_npu_login_shell_loads_the_toolkit_environment(npu):
    assert npu["defaults"]["run"]["shell"] == "bash -el {0}"


# --- cpu.yml ------------------------------------------------------------------------


def test_cpu_runs_on_push_and_pull_request(cpu):
    assert {"push", "pull_request"} <= set(cpu["on"])


def test_cpu_jobs_use_python_311_on_ubuntu(cpu):
    assert set(cpu["jobs"]) == {"lint", "test-paired", "test-latest"}
    for job in cpu["jobs"].values():
        assert job["runs-on"] == "ubuntu-latest"
        (setup,) = uses(job, "actions/setup-python")
        assert setup["with"]["python-version"] == "3.11"


def test_cpu_lint_job(cpu):
    commands = runs(cpu["jobs"]["lint"])
    assert any(c.startswith("ruff check") for c in commands)
    assert any(c.startswith("ruff format --check") for c in commands)
    assert "mypy cookbook" in commands


@pytest.mark.parametrize("job_name", ["test-paired", "test-latest"])
def test_cpu_test_jobs_build_the_stack_then_make_test(cpu, job_name):
    """`make test` runs the tests and then every notebook through the runner."""
    job = cpu["jobs"][job_name]
    commands = runs(job)
    assert commands.index("bash env/setup-cpu-stack.sh") < commands.index("make test")
    makefile = (REPO / "Makefile").read_text()
    test_target = makefile.split("\ntest:", 1)[1].split("\n\n", 1)[0]
    assert "run-notebooks --profile cpu" in test_target
    (cache,) = uses(job, "actions/cache")
    assert cache["with"]["path"] == "~/.cache/internvl-cookbook/stacks"
    assert "hashFiles('pyproject.toml', 'env/setup_cpu_stack.py')" in cache["with"]["key"]
    (upload,) = uses(job, "actions/upload-artifact")
    assert upload["if"] == "always()"
    assert upload["with"]["path"].split() == ["build/notebooks/**", "build/screenshots/**"]


def test_cpu_paired_job_must_pass_and_latest_may_fail(cpu):
    paired, latest = cpu["jobs"]["test-paired"], cpu["jobs"]["test-latest"]
    assert paired.get("continue-on-error", False) is False
    assert paired["env"]["COOKBOOK_STACK_PROFILE"] == "paired"
    assert latest["continue-on-error"] is True
    assert latest["env"]["COOKBOOK_STACK_PROFILE"] == "latest"
    # The Makefile picks its stack from PROFILE, which would otherwise default to paired.
    assert paired["env"]["PROFILE"] == "paired"
    assert latest["env"]["PROFILE"] == "latest"
    # Separate cache entries: each profile is its own venv.
    assert "paired" in uses(paired, "actions/cache")[0]["with"]["key"]
    assert "latest" in uses(latest, "actions/cache")[0]["with"]["key"]


def test_cpu_stack_profiles_exist_in_pyproject(cpu):
    with open(REPO / "pyproject.toml", "rb") as fh:
        stacks = tomllib.load(fh)["tool"]["cookbook"]["stack"]
    for job in ("test-paired", "test-latest"):
        assert cpu["jobs"][job]["env"]["COOKBOOK_STACK_PROFILE"] in stacks
