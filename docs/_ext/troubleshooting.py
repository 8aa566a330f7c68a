"""The troubleshooting page's error messages, produced for real at every docs build.

Each `Case` holds a few lines of code that make a mistake users make. The build runs that
exact code, captures the exception it raises and writes the code, the message, the cause
and the fix into ``_generated/troubleshooting.md``. The page therefore always quotes the
messages the installed ``cookbook`` and vLLM print, and a case that stops raising makes the
build fail (a Sphinx warning, and the docs build treats warnings as errors).

Cases with ``runs_in="cookbook"`` run inside the Sphinx process: they only need the
``cookbook`` package, which imports neither torch nor vLLM. Cases with
``runs_in="vllm"`` run in one separate Python process (the same interpreter), so that
vLLM and torch stay out of the Sphinx process; there, ``offline=True`` switches name
resolution off for the call, which is what a machine without internet access sees.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sphinx.util import logging

logger = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parent.parent.parent
VLLM_TIMEOUT_S = 600


@dataclass(frozen=True)
class Case:
    """One error of the troubleshooting page.

    Attributes:
        anchor: Heading text, starting with the case id where it has one (``"C01"``).
        raised_by: The function that raises, for the reader.
        code: Python code that makes the mistake; it is run as written and shown.
        cause: Why the error happens (MyST markdown).
        fix: What to do instead (MyST markdown).
        runs_in: ``"cookbook"`` (in the build process) or ``"vllm"`` (separate process).
        offline: Run with name resolution switched off (``"vllm"`` cases only).
        expect: Name of the exception class the code must raise.
    """

    anchor: str
    raised_by: str
    code: str
    cause: str
    fix: str
    runs_in: str = "cookbook"
    offline: bool = False
    expect: str = "ValueError"


_PNG_SETUP = """\
import base64
import io

from PIL import Image

from cookbook.images import from_data_url

buf = io.BytesIO()
Image.new("RGB", (8, 8), "red").save(buf, format="PNG")
png_base64 = base64.b64encode(buf.getvalue()).decode()
"""

CASES: tuple[Case, ...] = (
    Case(
        anchor="C01: the prompt has fewer `<image>` placeholders than images",
        raised_by="`cookbook.prompts.check_prompt` (called by `build_prompt` and every recipe)",
        code="""\
from cookbook.prompts import check_prompt

prompt = (
    "<|im_start|>user\\nImage-1: <image>\\nWhat differs between the two photos?<|im_end|>\\n"
    "<|im_start|>assistant\\n"
)
check_prompt(prompt, num_images=2)
""",
        cause=(
            "vLLM pairs the images of a request with the `<image>` placeholders of its "
            "prompt, one each, in order. A prompt typed by hand easily has one placeholder "
            "too few (or none at all), and vLLM then fails inside the engine with a less "
            "helpful message, or the model never sees an image."
        ),
        fix=(
            "Build the prompt with `cookbook.prompts.build_prompt(tokenizer, question, "
            "num_images=N)`: it applies the model's own chat template and writes one "
            "`Image-k: <image>` line per image, as InternVL was trained. The recipes "
            "(`ask_image`, `ask_images`, `ask_batch`) do this for you."
        ),
    ),
    Case(
        anchor="C01: a prompt in another model family's format",
        raised_by="`cookbook.prompts.check_prompt`",
        code="""\
from cookbook.prompts import check_prompt

check_prompt("USER: <image>\\nWhat is in this photo? ASSISTANT:", num_images=1)
""",
        cause=(
            "Prompts copied from LLaVA examples use `USER: ... ASSISTANT:` turns (and "
            "other models use other placeholders). InternVL's chat template is ChatML "
            "(`<|im_start|>user ... <|im_end|>`); a foreign template runs, but the model "
            "answers badly, so the cookbook refuses it."
        ),
        fix=(
            "Use `cookbook.prompts.build_prompt`, which applies the tokenizer's own chat "
            "template, or use vLLM's `LLM.chat` with OpenAI-style messages."
        ),
    ),
    Case(
        anchor="C03: more images than the engine's image limit",
        raised_by="`cookbook.tiling.check_image_limit` (called by every recipe before sending)",
        code="""\
from cookbook.tiling import check_image_limit

# an engine created with limit_mm_per_prompt={"image": 4}, and five images in one prompt
check_image_limit(5, 4)
""",
        cause=(
            "vLLM reserves memory for at most `limit_mm_per_prompt` images per prompt and "
            "refuses more (the server answers `400 At most 4 image(s) may be provided in one "
            "prompt.`). The recommended setting for the 8B models is 4."
        ),
        fix=(
            "Send at most that many images per prompt (split the request), or create the "
            'engine with a larger `limit_mm_per_prompt={"image": N}` (the server: '
            "`--limit-mm-per-prompt '{\"image\":N}'`). More images also need a larger "
            "`max_model_len` (next case)."
        ),
    ),
    Case(
        anchor="C03: more images than the server's image limit",
        raised_by="`cookbook.tiling.check_image_limit` (the server client checks before sending)",
        code="""\
from cookbook.tiling import check_image_limit

check_image_limit(5, 4, where="server")
""",
        cause="The same limit on a `vllm serve` process, which was started with "
        "`--limit-mm-per-prompt '{\"image\":4}'`.",
        fix="Restart the server with the flag the message names, or send fewer images.",
    ),
    Case(
        anchor="C04: the images do not fit `max_model_len`",
        raised_by="`cookbook.tiling.check_budget` (called by every recipe before sending)",
        code="""\
from cookbook.tiling import check_budget, plan_images

sizes = [(1792, 1344)] * 8  # eight photos; each becomes 12 tiles + a thumbnail
plans = plan_images(sizes, max_dynamic_patch=12)
check_budget(
    [p.tokens for p in plans],
    text_tokens=40,
    max_tokens=256,
    max_model_len=8192,
    max_dynamic_patch=12,
    image_sizes=sizes,
)
""",
        cause=(
            "InternVL cuts each image into up to `max_dynamic_patch` tiles of 448 pixels "
            "plus a thumbnail, and each tile costs 256 prompt tokens: one large photo can "
            "take 13 x 256 = 3328 tokens. Images, text and the answer must fit "
            "`max_model_len` together."
        ),
        fix=(
            "Do one of the remedies the message lists: send fewer images per prompt, lower "
            "`max_dynamic_patch` (fewer tiles per image, less detail), or raise "
            "`max_model_len` (more memory for the KV cache)."
        ),
    ),
    Case(
        anchor="C06: bare base64 text instead of a data URL",
        raised_by="`cookbook.images.from_data_url` (and `load_image`)",
        code=_PNG_SETUP
        + """
from_data_url(png_base64)  # the payload without its "data:image/png;base64," prefix
""",
        cause=(
            "Base64 text alone does not say which image format it holds, and the OpenAI "
            "API and vLLM's server expect a data URL: `data:image/png;base64,...`."
        ),
        fix=(
            "Build data URLs with `cookbook.images.to_data_url(image)`, which detects the "
            "format; when you have base64 text and know its format, prefix it with "
            "`data:image/<format>;base64,`."
        ),
    ),
    Case(
        anchor="C06: a data URL that declares the wrong format",
        raised_by="`cookbook.images.from_data_url` (and `load_image`)",
        code=_PNG_SETUP
        + """
from_data_url("data:image/jpeg;base64," + png_base64)  # PNG bytes labelled as JPEG
""",
        cause=(
            "The MIME type of a data URL must be the true format of its bytes; code that "
            "always writes `image/jpeg` sends PNG files mislabelled, which some servers "
            "and clients decode wrongly or refuse."
        ),
        fix="Let `cookbook.images.to_data_url` write the URL: it reads the format from the bytes.",
    ),
    Case(
        anchor="An unknown model name",
        raised_by="`cookbook.models.resolve_model` (called by `create_engine` and the server)",
        code="""\
from cookbook.models import resolve_model

resolve_model("InternVL4-8B")
""",
        cause=(
            "The name is neither a key of the support matrix (spellings such as "
            "`InternVL2_5-8B` and `OpenGVLab/InternVL3-8B` are accepted), nor a local "
            "checkpoint directory, nor a hub id of the form `org/name`."
        ),
        fix=(
            "Use a key of the [support matrix](support-matrix.md), a hub id such as "
            "`OpenGVLab/InternVL3-8B` (models outside the matrix get the recommended "
            "settings), or the path of a downloaded checkpoint."
        ),
    ),
    Case(
        anchor="vLLM: `TypeError: Prompt text should be a string` (a batch as one dict)",
        raised_by=(
            "vLLM's prompt parser `parse_dec_only_prompt` "
            "(`vllm/renderers/inputs/preprocess.py`), which `LLM.generate` runs on every "
            "prompt; this message is vLLM's own"
        ),
        code="""\
from PIL import Image
from vllm.renderers.inputs.preprocess import parse_dec_only_prompt

prompts = [f"<|im_start|>user\\n<image>\\nQuestion {i}<|im_end|>\\n" for i in range(3)]
images = [Image.new("RGB", (448, 448)) for _ in range(3)]
# the upstream tutorial's batch: llm.generate({"prompt": prompts, "multi_modal_data": ...})
parse_dec_only_prompt({"prompt": prompts, "multi_modal_data": {"image": images}})
""",
        runs_in="vllm",
        expect="TypeError",
        cause=(
            "One request dict holds one prompt. The tutorial the cookbook started from puts "
            "a *list* of prompts (and of images) in a single dict, which vLLM refuses."
        ),
        fix=(
            "A batch is a *list of request dicts*, one per prompt: "
            '`llm.generate([{"prompt": p, "multi_modal_data": {"image": img}} for p, img '
            "in zip(prompts, images)], sampling_params)`. `cookbook.recipes.ask_batch` "
            "builds it, and maps results back to requests in order."
        ),
    ),
    Case(
        anchor="vLLM: `ImageAsset` needs the internet",
        raised_by=(
            "`vllm.assets.image.ImageAsset`, which downloads its photos from vLLM's public "
            "S3 bucket on first use (captured with name resolution switched off, as on a "
            "machine without internet access)"
        ),
        code="""\
from vllm.assets.image import ImageAsset

ImageAsset("cherry_blossom").pil_image
""",
        runs_in="vllm",
        offline=True,
        expect="ConnectionError",
        cause=(
            "vLLM's example images are not part of the vLLM package: `ImageAsset` "
            "downloads them into `$VLLM_ASSETS_CACHE` the first time. Offline, behind a "
            "proxy, or in a container without network access, that download fails."
        ),
        fix=(
            'Use the photos that ship with scikit-image: `cookbook.images.load_image("cat")` '
            "(also `astronaut`, `coffee`, `rocket`, ...; see `cookbook.images.SAMPLE_IMAGES`), "
            "or a local path or URL of your own image."
        ),
    ),
)


def _qualname(exc: BaseException) -> str:
    cls = type(exc)
    if cls.__module__ == "builtins":
        return cls.__name__
    return f"{cls.__module__}.{cls.__name__}"


def run_in_process(case: Case) -> dict[str, Any]:
    """Run one case's code here; return ``{"raised", "type", "message"}``."""
    try:
        exec(compile(case.code, f"<troubleshooting {case.anchor}>", "exec"), {})
    except Exception as exc:  # every kind is reported, the page says which was raised
        return {"raised": True, "type": _qualname(exc), "message": str(exc)}
    return {"raised": False}


_HARNESS = r"""
import json, socket, sys

def qualname(exc):
    cls = type(exc)
    return cls.__name__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__name__}"

def no_network(*args, **kwargs):
    raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

results = {}
for key, code, offline in json.loads(sys.stdin.read()):
    real = socket.getaddrinfo
    if offline:
        socket.getaddrinfo = no_network
    try:
        exec(compile(code, f"<troubleshooting {key}>", "exec"), {})
        results[key] = {"raised": False}
    except Exception as exc:
        results[key] = {"raised": True, "type": qualname(exc), "message": str(exc)}
    finally:
        socket.getaddrinfo = real
print("@@RESULTS@@" + json.dumps(results))
"""


def run_in_vllm_process(cases: list[Case]) -> dict[str, dict[str, Any]]:
    """Run the vLLM cases in one child process; return results by anchor.

    A case whose process could not run gets ``{"raised": None, "problem": ...}``.
    """
    if not cases:
        return {}
    with tempfile.TemporaryDirectory(prefix="cookbook-docs-assets-") as assets:
        env = dict(
            os.environ,
            PYTHONPATH=os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p),
            VLLM_LOGGING_LEVEL="ERROR",
            # An empty asset cache: ImageAsset must try to download, as on a fresh machine.
            VLLM_ASSETS_CACHE=assets,
        )
        payload = json.dumps([[c.anchor, c.code, c.offline] for c in cases])
        try:
            proc = subprocess.run(
                [sys.executable, "-c", _HARNESS],
                input=payload,
                capture_output=True,
                text=True,
                env=env,
                cwd=assets,
                timeout=VLLM_TIMEOUT_S,
            )
        except subprocess.TimeoutExpired:
            problem = f"the vLLM cases did not finish within {VLLM_TIMEOUT_S} s"
            return {c.anchor: {"raised": None, "problem": problem} for c in cases}
    for line in proc.stdout.splitlines():
        if line.startswith("@@RESULTS@@"):
            return json.loads(line[len("@@RESULTS@@") :])
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
    problem = f"{sys.executable} could not run them (exit {proc.returncode}): " + " | ".join(tail)
    return {c.anchor: {"raised": None, "problem": problem} for c in cases}


def case_markdown(case: Case, result: dict[str, Any]) -> str:
    """Return one case's section: code, captured message, cause and fix."""
    if result.get("raised"):
        shown = f"{result['type']}: {result['message']}"
        message = (
            "The message, as this build of the documentation captured it:\n\n"
            f"```{{code-block}} text\n:class: cookbook-error\n\n{shown}\n```\n"
        )
    elif result.get("raised") is None:
        message = f"*This build could not capture the message: {result['problem']}.*\n"
    else:
        message = "*This build ran the code above and it raised nothing.*\n"
    return (
        f"## {case.anchor}\n\n"
        f"Raised by {case.raised_by}.\n\n"
        f"```python\n{case.code.rstrip()}\n```\n\n"
        f"{message}\n"
        f"**Cause.** {case.cause}\n\n"
        f"**Fix.** {case.fix}\n"
    )


def write_troubleshooting(path: Path) -> None:
    """Trigger every case, then write the page fragment to ``path`` (if it changed).

    A case that raises nothing, raises another exception class than expected, or could not
    be run is reported as a Sphinx warning, which fails the ``-W`` build.
    """
    results: dict[str, dict[str, Any]] = {}
    for case in CASES:
        if case.runs_in == "cookbook":
            results[case.anchor] = run_in_process(case)
    results.update(run_in_vllm_process([c for c in CASES if c.runs_in == "vllm"]))

    for case in CASES:
        res = results[case.anchor]
        if res.get("raised") is None:
            logger.warning(f"troubleshooting case {case.anchor!r}: {res['problem']}")
        elif not res["raised"]:
            logger.warning(
                f"troubleshooting case {case.anchor!r} no longer raises; update the case "
                "or the page"
            )
        elif res["type"].rsplit(".", 1)[-1] != case.expect:
            logger.warning(
                f"troubleshooting case {case.anchor!r} raised {res['type']}, expected "
                f"{case.expect}: {textwrap.shorten(res['message'], 200)}"
            )

    text = "\n".join(case_markdown(c, results[c.anchor]) for c in CASES)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists() or path.read_text(encoding="utf-8") != text:
        path.write_text(text, encoding="utf-8")
