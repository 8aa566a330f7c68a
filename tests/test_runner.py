"""The notebook runner on small throwaway notebooks (real papermill, no vLLM)."""

from __future__ import annotations

import json

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from cookbook import runner

WRITE_RECORD = """
import json, pathlib
pathlib.Path(results_path).write_text(json.dumps({
    "parameters": {"model": model, "smoke": smoke},
    "results": [{"index": 0, "text": "x", "prompt_tokens": 300, "output_tokens": 3,
                 "finish_reason": "stop", "num_images": 1, "tiles": [1],
                 "image_tokens": 258, "measured_image_tokens": 258}],
}))
"""


def make_notebook(path, body, kernel="python3"):
    params = new_code_cell(
        'model: str = "tiny"  # model\nsmoke: bool = False  # quick\n'
        'results_path: str = "r.json"  # record'
    )
    params.metadata["tags"] = ["parameters"]
    nb = new_notebook(cells=[new_markdown_cell("# T"), params, new_code_cell(body)])
    nb.metadata["kernelspec"] = {"name": kernel, "display_name": kernel, "language": "python"}
    nbformat.write(nb, str(path))


@pytest.fixture
def project(tmp_path):
    nb_dir = tmp_path / "notebooks"
    nb_dir.mkdir()
    make_notebook(nb_dir / "01_ok.ipynb", WRITE_RECORD)
    make_notebook(nb_dir / "02_raises.ipynb", "raise ValueError('bad input on purpose')")
    # C09: a kernelspec naming an environment that does not exist on the runner.
    make_notebook(nb_dir / "03_foreign_kernel.ipynb", WRITE_RECORD, kernel="conda-env-gone-py")
    make_notebook(nb_dir / "04_skipped.ipynb", "raise SystemExit(3)")
    (nb_dir / "manifest.toml").write_text(
        """
[profiles.cpu]
checks = "structure"
parameters = { model = "tiny", smoke = true }

[profiles.npu]
checks = "content"
parameters = { model = "internvl3-8b" }

[[notebooks]]
name = "01_ok"
timeout = 60

[[notebooks]]
name = "02_raises"
timeout = 60

[[notebooks]]
name = "03_foreign_kernel"
timeout = 60

[[notebooks]]
name = "04_skipped"
skip.cpu = "needs an NPU"
"""
    )
    return nb_dir


def test_runner_reports_pass_fail_skip_with_reasons(project, tmp_path):
    lines = []
    reports = runner.run_notebooks(
        "cpu", manifest_path=project / "manifest.toml", out_dir=tmp_path / "out", log=lines.append
    )
    status = {r.name: r.status for r in reports}
    assert status == {
        "01_ok": "passed",
        "02_raises": "failed",
        "03_foreign_kernel": "passed",
        "04_skipped": "skipped",
    }
    failed = reports[1]
    assert "ValueError" in failed.reason and "bad input on purpose" in failed.reason
    assert reports[3].reason == "needs an NPU"
    assert lines[-1] == "notebooks (cpu): 2 passed, 1 failed, 1 skipped"
    assert lines[0].startswith("PASSED  01_ok")
    run = json.loads((tmp_path / "out" / "run.json").read_text())
    assert [r["status"] for r in run["reports"]] == ["passed", "failed", "passed", "skipped"]
    executed = nbformat.read(str(tmp_path / "out" / "01_ok.ipynb"), as_version=4)
    injected = [c for c in executed.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert "smoke = True" in injected[0].source


def test_injected_value_must_be_the_one_recorded(project, tmp_path):
    """A notebook that ignores an injected parameter fails the parameters check (C08)."""
    reports = runner.run_notebooks(
        "cpu",
        manifest_path=project / "manifest.toml",
        out_dir=tmp_path / "o",
        only=["01"],
        model="internvl3-8b",
        log=lambda s: None,
    )
    assert reports[0].status == "passed"  # the notebook records what it was given
    make_notebook(
        project / "01_ok.ipynb", WRITE_RECORD.replace('"model": model', '"model": "tiny"')
    )
    reports = runner.run_notebooks(
        "cpu",
        manifest_path=project / "manifest.toml",
        out_dir=tmp_path / "o2",
        only=["01"],
        model="internvl3-8b",
        log=lambda s: None,
    )
    assert reports[0].status == "failed"
    assert "injected 'internvl3-8b' but the notebook used 'tiny'" in reports[0].reason


def test_kernel_name_is_passed_explicitly(project, tmp_path, monkeypatch):
    import papermill

    seen = {}

    def fake_execute(inp, out, **kwargs):
        seen.update(kwargs)
        raise RuntimeError("stop here")

    monkeypatch.setattr(papermill, "execute_notebook", fake_execute)
    runner.run_notebooks(
        "cpu",
        manifest_path=project / "manifest.toml",
        out_dir=tmp_path / "x",
        only=["01"],
        log=lambda s: None,
    )
    assert seen["kernel_name"] == "python3"
    assert seen["execution_timeout"] == 60 and seen["cwd"] == str(project)


def test_parameter_precedence(project):
    manifest = runner.load_manifest(project / "manifest.toml")
    entry = {"name": "x", "parameters": {"cpu": {"smoke": False, "n": 2}}}
    params = runner.plan_parameters(manifest, entry, "cpu", model="m", overrides={"n": 5})
    assert params == {"model": "m", "smoke": False, "n": 5}


def test_bad_profile_and_selection(project, tmp_path):
    with pytest.raises(ValueError, match="unknown profile 'gpu'"):
        runner.run_notebooks("gpu", manifest_path=project / "manifest.toml", out_dir=tmp_path)
    with pytest.raises(ValueError, match="no notebook matches"):
        runner.run_notebooks(
            "cpu", manifest_path=project / "manifest.toml", out_dir=tmp_path, only=["99"]
        )


def test_manifest_naming_a_missing_notebook_is_refused(tmp_path):
    (tmp_path / "manifest.toml").write_text('[[notebooks]]\nname = "07_gone"\n')
    with pytest.raises(ValueError, match="07_gone.ipynb does not exist"):
        runner.load_manifest(tmp_path / "manifest.toml")


def test_cli_exit_status_follows_the_reports(project, tmp_path, monkeypatch):
    monkeypatch.setattr(runner, "MANIFEST", project / "manifest.toml")
    from cookbook.cli import main

    monkeypatch.setattr(
        runner,
        "run_notebooks",
        lambda *a, **k: [runner.NotebookReport("x", "failed", reason="r")],
    )
    assert main(["run-notebooks", "--profile", "cpu", "-p", "max_tokens", "8"]) == 1
