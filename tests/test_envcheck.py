"""The environment check (cookbook/envcheck.py) on fake environments and a stand-in npu-smi.

Each test builds what a real machine would show (npu-smi's table, a model cache, package
metadata, variables) and checks the line the check prints for it. None starts an engine.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cookbook import envcheck, models
from cookbook.envcheck import FAIL, PASS, WARN

REPO = Path(__file__).resolve().parents[1]
IMAGE = "quay.io/ascend/vllm-ascend:v0.23.0.post1"

# `npu-smi info` as the three chip families print it (layouts from vllm-ascend #2035 and
# #2534 for Atlas A3, nvtop #421 for Atlas 300I Duo).
A2_TABLE = """\
+------------------------------------------------------------------------------------------------+
| npu-smi 25.2.1                   Version: 25.2.1                                               |
+---------------------------+---------------+----------------------------------------------------+
| NPU   Name                | Health        | Power(W)    Temp(C)           Hugepages-Usage(page)|
| Chip                      | Bus-Id        | AICore(%)   Memory-Usage(MB)  HBM-Usage(MB)        |
+===========================+===============+====================================================+
| 0     910B3               | OK            | 93.2        39                0    / 0             |
| 0                         | 0000:C1:00.0  | 0           0    / 0          {used} / {total}         |
+===========================+===============+====================================================+
"""  # noqa: E501
A3_TABLE = """\
| npu-smi 25.2.1                   Version: 25.2.1                                               |
+---------------------------+---------------+----------------------------------------------------+
| NPU   Name                | Health        | Power(W)    Temp(C)           Hugepages-Usage(page)|
| Chip  Phy-ID              | Bus-Id        | AICore(%)   Memory-Usage(MB)  HBM-Usage(MB)        |
+===========================+===============+====================================================+
| 0     Ascend910           | OK            | 178.5       36                0    / 0             |
| 0     0                   | 0000:9D:00.0  | 0           0    / 0          3416 / 65536         |
+------------------------------------------------------------------------------------------------+
| 0     Ascend910           | OK            | -           36                0    / 0             |
| 1     1                   | 0000:9F:00.0  | 0           0    / 0          3195 / 65536         |
+===========================+===============+====================================================+
"""
P310_TABLE = """\
| npu-smi 25.2.0                                   Version: 25.2.0                                       |
+-------------------------------+-----------------+------------------------------------------------------+
| NPU     Name                  | Health          | Power(W)     Temp(C)           Hugepages-Usage(page) |
| Chip    Device                | Bus-Id          | AICore(%)    Memory-Usage(MB)                        |
+===============================+=================+======================================================+
| 2       310P3                 | OK              | NA           45                0     / 0             |
| 0       0                     | 0000:01:00.0    | 0            1529 / 44280                            |
+-------------------------------+-----------------+------------------------------------------------------+
"""  # noqa: E501
TABLES = {"A2": A2_TABLE.format(used=3162, total=65536), "A3": A3_TABLE, "310P": P310_TABLE}


def a2(used: int = 3162, total: int = 65536) -> str:
    return A2_TABLE.format(used=used, total=total)


def stand_in_npu_smi(folder: Path, text: str, rc: int = 0) -> Path:
    """An `npu-smi` script that prints ``text`` for `npu-smi info` and exits with ``rc``."""
    (folder / "table.txt").write_text(text)
    script = folder / "npu-smi"
    script.write_text(f'#!/bin/sh\ncat "{folder / "table.txt"}"\nexit {rc}\n')
    script.chmod(0o755)
    return script


@pytest.fixture
def npu_smi(tmp_path, monkeypatch):
    """Put a stand-in npu-smi first on PATH: ``npu_smi(text, rc=0)``."""

    def install(text: str, rc: int = 0) -> None:
        folder = tmp_path / "bin"
        folder.mkdir(exist_ok=True)
        stand_in_npu_smi(folder, text, rc)
        monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")

    return install


def by_name(checks):
    return {c.name: c for c in checks}


def fake_package(root: Path, name: str, files: dict[str, str]) -> Path:
    """A package ``name`` under ``root`` with ``files``; ``root`` goes on sys.path."""
    package = root / name
    package.mkdir(parents=True)
    for file, text in {"__init__.py": "", **files}.items():
        (package / file).write_text(text)
    return root


# --- the record and the module --------------------------------------------------------


def test_a_check_prints_its_fix_on_a_second_line():
    line = envcheck.Check("env X", FAIL, "set to 'fork'", "export X=spawn").line()
    assert line.splitlines() == ["FAIL  env X: set to 'fork'", "      fix: export X=spawn"]
    assert envcheck.Check("y", PASS, "ok").line() == "PASS  y: ok"


def test_importing_envcheck_loads_neither_torch_nor_vllm():
    code = (
        "import sys, cookbook.envcheck; print([m for m in ('torch', 'vllm') if m in sys.modules])"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


# --- the chip, read from npu-smi ------------------------------------------------------


@pytest.mark.parametrize(
    ("family", "name"), [("A2", "910B3"), ("A3", "Ascend910"), ("310P", "310P3")]
)
def test_the_chip_family_comes_from_the_name_column(family, name):
    assert envcheck.chip(TABLES[family]) == (family, name)


def test_a_table_without_npu_rows_has_no_chip():
    assert envcheck.chip("npu-smi 25.2.1\nno device found") == (None, "no NPU row")


def test_a_310p_card_fails_and_says_float16_and_the_310p_image(npu_smi):
    npu_smi(P310_TABLE)
    checks = by_name(envcheck.run_checks(None, "auto", environ={}))
    chip = checks["chip"]
    assert chip.status == FAIL
    assert "300I Duo" in chip.detail and "#6082" in chip.detail
    assert f"{IMAGE}-310p" in chip.fix and "float16" in chip.fix
    # This machine has no torch-npu: the driver answers, but vLLM would run on the CPU.
    assert checks["npu-smi"].status == FAIL and "vLLM runs on 'cpu'" in checks["npu-smi"].detail


def test_an_a3_host_is_told_the_a3_image(npu_smi):
    npu_smi(A3_TABLE)
    chip = by_name(envcheck.run_checks(None, "auto", environ={}))["chip"]
    assert chip.status == PASS
    assert chip.detail.endswith(f"its image is {IMAGE}-a3")


def test_an_a2_card_gets_the_plain_tag(npu_smi):
    npu_smi(TABLES["A2"])
    chip = by_name(envcheck.run_checks(None, "auto", environ={}))["chip"]
    assert chip.status == PASS
    assert chip.detail == f"910B3: Atlas A2; its image is {IMAGE}"


def test_an_a2_image_on_an_a3_host_fails(npu_smi, tmp_path, monkeypatch):
    # vllm-ascend's setup.py writes the chip family it was built for into _build_info.py,
    # and refuses to start on another (vllm_ascend/utils.py, check_ascend_device_type).
    root = fake_package(
        tmp_path / "site", "vllm_ascend", {"_build_info.py": "__device_type__ = 'A2'\n"}
    )
    monkeypatch.syspath_prepend(str(root))
    assert envcheck.vllm_ascend_build() == "A2"
    npu_smi(A3_TABLE)
    chip = by_name(envcheck.run_checks(None, "auto", environ={}))["chip"]
    assert chip.status == FAIL
    assert "built for A2" in chip.detail
    assert chip.fix == f"use {IMAGE}-a3"


def test_npu_smi_that_fails_is_a_failure_with_the_mounts_fix(npu_smi):
    npu_smi("dcmi module initialize failed. ret is -8005", rc=8)
    check = by_name(envcheck.run_checks(None, "auto", environ={}))["npu-smi"]
    assert check.status == FAIL
    assert "exit 8" in check.detail and "mounts" in check.fix


def test_asking_for_an_npu_on_this_machine_fails():
    checks = by_name(envcheck.run_checks(None, "npu", environ={}))
    assert checks["device"].status == FAIL
    assert "'npu'" in checks["device"].detail


# --- versions ---------------------------------------------------------------------------


def test_the_cpu_stack_matches_a_profile_of_pyproject():
    check = envcheck.check_versions("cpu", {})
    assert check.status == PASS, check.line()


def test_an_npu_stack_without_vllm_ascend_and_torch_npu_fails():
    check = envcheck.check_versions("npu", {})
    assert check.status == FAIL
    assert "vllm-ascend, torch-npu not installed" in check.detail
    assert IMAGE in check.fix


def dist_info(root: Path, name: str, version: str) -> None:
    folder = root / f"{name.replace('-', '_')}-{version}.dist-info"
    folder.mkdir(parents=True)
    (folder / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")


def test_other_npu_versions_than_the_pins_warn(tmp_path, monkeypatch):
    site = tmp_path / "site"
    dist_info(site, "vllm-ascend", "0.22.0")
    dist_info(site, "torch-npu", "2.10.0.post4")
    monkeypatch.syspath_prepend(str(site))
    toolkit = tmp_path / "toolkit" / "aarch64-linux"
    toolkit.mkdir(parents=True)
    (toolkit / "ascend_toolkit_install.info").write_text(
        "package_name=Ascend-cann-toolkit\nversion=9.1.0\n"
    )
    env = {"ASCEND_TOOLKIT_HOME": str(tmp_path / "toolkit")}
    assert envcheck.cann_version(env) == "9.1.0"
    check = envcheck.check_versions("npu", env)
    assert check.status == WARN
    assert "vllm-ascend (pinned 0.23.0.post1)" in check.detail
    assert "cann 9.1.0" in check.detail and "cann (pinned" not in check.detail


# --- environment variables --------------------------------------------------------------


def test_an_unset_alloc_conf_passes_on_the_npu():
    check = by_name(envcheck.check_environment("npu", {}))["PYTORCH_NPU_ALLOC_CONF"]
    assert check.status == PASS
    assert "expandable_segments:True" in check.detail


def test_max_split_size_mb_warns_that_it_switches_off_expandable_segments():
    env = {"PYTORCH_NPU_ALLOC_CONF": "max_split_size_mb:256"}
    check = by_name(envcheck.check_environment("npu", env))["PYTORCH_NPU_ALLOC_CONF"]
    assert check.status == WARN
    assert "switches off" in check.detail and "expandable_segments:True" in check.detail
    assert check.fix.startswith("unset PYTORCH_NPU_ALLOC_CONF")
    assert "fragmentation" in check.fix


def test_expandable_segments_set_by_hand_passes():
    env = {"PYTORCH_NPU_ALLOC_CONF": "expandable_segments:True"}
    assert by_name(envcheck.check_environment("npu", env))["PYTORCH_NPU_ALLOC_CONF"].status == PASS


def test_fork_fails_on_the_npu_only_and_unset_warns_there():
    name = "VLLM_WORKER_MULTIPROC_METHOD"
    assert by_name(envcheck.check_environment("npu", {name: "fork"}))[name].status == FAIL
    assert by_name(envcheck.check_environment("cpu", {name: "fork"}))[name].status == PASS
    assert by_name(envcheck.check_environment("npu", {}))[name].status == WARN
    assert by_name(envcheck.check_environment("cpu", {name: "threads"}))[name].status == FAIL


def test_vllm_use_modelscope_1_reads_as_off():
    check = by_name(envcheck.check_environment("npu", {"VLLM_USE_MODELSCOPE": "1"}))
    assert check["VLLM_USE_MODELSCOPE"].status == WARN
    assert "off" in check["VLLM_USE_MODELSCOPE"].detail


def test_modelscope_on_needs_the_modelscope_package(tmp_path, monkeypatch):
    env = {"VLLM_USE_MODELSCOPE": "True"}
    if envcheck.importlib.util.find_spec("modelscope") is None:
        check = by_name(envcheck.check_environment("npu", env))["VLLM_USE_MODELSCOPE"]
        assert check.status == FAIL and "pip install modelscope" in check.fix
    monkeypatch.syspath_prepend(str(fake_package(tmp_path / "site", "modelscope", {})))
    assert by_name(envcheck.check_environment("npu", env))["VLLM_USE_MODELSCOPE"].status == PASS


# --- the model cache --------------------------------------------------------------------


def write_checkpoint(folder: Path, shards: int = 2, drop: int | None = None) -> None:
    """A checkpoint folder: config.json, an index naming ``shards`` files, all but ``drop``."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text("{}")
    names = [f"model-{i:05d}-of-{shards:05d}.safetensors" for i in range(1, shards + 1)]
    index = {"weight_map": {f"w{i}": n for i, n in enumerate(names)}}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    for i, name in enumerate(names):
        if i != drop:
            (folder / name).write_bytes(b"\0" * 8)


def write_hf_cache(cache: Path, hub_id: str, **kw) -> None:
    """The Hugging Face hub cache layout: models--ORG--NAME/{refs/main, snapshots/REV/...}."""
    repo = cache / ("models--" + hub_id.replace("/", "--"))
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0123abcd")
    write_checkpoint(repo / "snapshots" / "0123abcd", **kw)


SPEC = models.SUPPORT_MATRIX["internvl3-8b"]
MODELSCOPE_OFFLINE = {"VLLM_USE_MODELSCOPE": "True", "HF_HUB_OFFLINE": "1"}


def test_offline_modelscope_and_a_missing_model_fail_with_the_download_command(tmp_path):
    env = {**MODELSCOPE_OFFLINE, "MODELSCOPE_CACHE": str(tmp_path)}
    check = envcheck.check_model(SPEC, env)
    assert check.status == FAIL
    assert "HF_HUB_OFFLINE" in check.detail and "ModelScope" in check.detail
    assert check.fix.endswith("modelscope download --model OpenGVLab/InternVL3-8B")


def test_online_a_missing_model_is_only_a_warning(tmp_path):
    check = envcheck.check_model(
        SPEC, {"VLLM_USE_MODELSCOPE": "True", "MODELSCOPE_CACHE": str(tmp_path)}
    )
    assert check.status == WARN
    assert check.fix.endswith("modelscope download --model OpenGVLab/InternVL3-8B")


def test_the_command_line_exits_1_for_offline_modelscope_without_the_model(
    tmp_path, monkeypatch, capsys
):
    for key, value in {**MODELSCOPE_OFFLINE, "MODELSCOPE_CACHE": str(tmp_path)}.items():
        monkeypatch.setenv(key, value)
    ap = argparse.ArgumentParser()
    envcheck.add_arguments(ap)
    assert envcheck.run_from_args(ap.parse_args(["--model", "internvl3-8b", "--json"])) == 1
    printed = {c["name"]: c for c in json.loads(capsys.readouterr().out)}
    assert printed["model"]["status"] == FAIL
    assert "modelscope download --model OpenGVLab/InternVL3-8B" in printed["model"]["fix"]


def test_a_complete_modelscope_copy_passes_with_dots_written_as_underscores(tmp_path):
    spec = models.ModelSpec("fake", "OpenGVLab/Fake2.5-1B", llm="", llm_family="qwen2")
    write_checkpoint(tmp_path / "models" / "OpenGVLab" / "Fake2___5-1B")
    env = {**MODELSCOPE_OFFLINE, "MODELSCOPE_CACHE": str(tmp_path)}
    assert envcheck.check_model(spec, env).status == PASS


def test_a_partial_modelscope_download_fails(tmp_path):
    write_checkpoint(tmp_path / "models" / "OpenGVLab" / "InternVL3-8B", shards=4, drop=2)
    check = envcheck.check_model(
        SPEC, {"VLLM_USE_MODELSCOPE": "True", "MODELSCOPE_CACHE": str(tmp_path)}
    )
    assert check.status == FAIL
    assert "1 weight file(s) missing (model-00003-of-00004.safetensors" in check.detail
    assert check.fix == "finish the download: modelscope download --model OpenGVLab/InternVL3-8B"


def test_the_hugging_face_cache_is_read_through_huggingface_hub(tmp_path):
    write_hf_cache(tmp_path / "hub", SPEC.hub_id)
    assert envcheck.check_model(SPEC, {"HF_HUB_CACHE": str(tmp_path / "hub")}).status == PASS
    # HF_HOME/hub is the same cache when HF_HUB_CACHE is unset.
    assert envcheck.check_model(SPEC, {"HF_HOME": str(tmp_path)}).status == PASS
    # ModelScope on: vLLM no longer reads the Hugging Face cache.
    env = {"HF_HOME": str(tmp_path), "MODELSCOPE_CACHE": str(tmp_path / "ms"), **MODELSCOPE_OFFLINE}
    assert envcheck.check_model(SPEC, env).status == FAIL


def test_a_missing_shard_in_the_hugging_face_cache_fails(tmp_path):
    write_hf_cache(tmp_path / "hub", SPEC.hub_id, shards=3, drop=0)
    check = envcheck.check_model(SPEC, {"HF_HUB_CACHE": str(tmp_path / "hub")})
    assert check.status == FAIL and check.fix.endswith("hf download OpenGVLab/InternVL3-8B")


def test_offline_without_modelscope_fails_with_hf_download(tmp_path):
    check = envcheck.check_model(SPEC, {"HF_HUB_CACHE": str(tmp_path), "HF_HUB_OFFLINE": "1"})
    assert check.status == FAIL and check.fix.endswith("hf download OpenGVLab/InternVL3-8B")


def test_a_local_folder_without_config_fails(tmp_path):
    spec = models.ModelSpec("local", str(tmp_path), llm="", llm_family="qwen2")
    assert envcheck.check_model(spec, {}).status == FAIL
    write_checkpoint(tmp_path, shards=1)
    assert envcheck.check_model(spec, {}).status == PASS


def test_an_unknown_model_is_a_failure_not_an_exception():
    check = envcheck.run_checks("no-such-model", "cpu", environ={})[-1]
    assert check.name == "model" and check.status == FAIL


# --- memory -----------------------------------------------------------------------------


def test_an_8b_model_fits_an_idle_64_gb_npu():
    # No torch-npu here: the free memory comes from npu-smi's HBM column.
    check = envcheck.check_memory(SPEC, "npu", 8192, a2())
    assert check.status == PASS, check.line()
    assert "npu-smi info" in check.detail


def test_a_busy_card_fails_with_the_ways_out():
    check = envcheck.check_memory(SPEC, "npu", 8192, a2(used=50000))
    assert check.status == FAIL
    assert "lower max_model_len" in check.fix


def test_a_long_context_needs_more_kv_cache_than_a_32_gb_card_has():
    spec = models.SUPPORT_MATRIX["internvl2-8b"]  # 32 layers x 8 KV heads: 128 KiB a token
    assert envcheck.check_memory(spec, "npu", 8192, a2(2000, 32768)).status == PASS
    long = envcheck.check_memory(spec, "npu", 131072, a2(2000, 32768))
    assert long.status == FAIL
    assert "KV cache 16.00 GiB" in long.detail


def test_the_cpu_counts_the_engines_fixed_kv_cache():
    check = envcheck.check_memory(SPEC, "cpu", 131072)
    assert "KV cache 0.50 GiB" in check.detail


# --- notebook 00 ------------------------------------------------------------------------


@pytest.mark.notebook
def test_notebook_00_records_the_checks_of_run_checks(tmp_path, monkeypatch):
    """The notebook's cells are `run_checks` step by step: the same checks, the same verdicts."""
    import papermill

    monkeypatch.setenv("PYTHONPATH", str(REPO))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))  # an empty cache: the model WARNs
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.delenv("VLLM_USE_MODELSCOPE", raising=False)
    record_path = tmp_path / "00.json"
    papermill.execute_notebook(
        str(REPO / "notebooks" / "00_environment_setup.ipynb"),
        str(tmp_path / "00.ipynb"),
        parameters={"model": "internvl3-8b", "device": "cpu", "results_path": str(record_path)},
        kernel_name="python3",
        cwd=str(REPO / "notebooks"),
        progress_bar=False,
    )
    record = json.loads(record_path.read_text())
    expected = envcheck.run_checks("internvl3-8b", "cpu")
    # Free memory moves between the two runs: compare the memory check by name only.
    assert [
        (c["name"], c["status"] if c["name"] != "memory" else "") for c in record["checks"]
    ] == [(c.name, c.status if c.name != "memory" else "") for c in expected]
    assert by_name(expected)["model"].status == WARN
    assert record["failures"] == [c.line() for c in expected if c.status == FAIL]
