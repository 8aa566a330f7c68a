#!/usr/bin/env bash
# Install the cookbook and the notebook tools into the vllm-ascend container without
# changing the stack the image ships: torch, torch-npu, torchvision, vllm, vllm-ascend,
# transformers, triton-ascend, numpy, and the libraries vLLM's server and the hubs stand on
# (fastapi, pydantic, protobuf, huggingface_hub, tokenizers, openai, pillow, modelscope).
#
# How: every protected package is pinned to the version installed now in a constraints
# file, so pip fails rather than replace one; afterwards the versions are compared with the
# ones before, and any change is an error. It works on an air-gapped runner:
#   - the cookbook goes in with --no-deps --no-build-isolation --no-index (pip builds it
#     with the image's own setuptools, downloads nothing); without setuptools >= 68 in the
#     image, or with --pythonpath, nothing is installed and the checkout is used from
#     PYTHONPATH (`python -m cookbook` from the checkout, and the notebook runner, need no
#     install);
#   - only the notebook tools ([project.optional-dependencies].notebooks in pyproject.toml)
#     that are missing are installed, with --no-build-isolation --prefer-binary; when all
#     are present (an image that has them baked in) pip is not called at all.
#
# Usage:
#   bash env/npu/install-cookbook.sh              (inside the container)
#   bash env/npu/install-cookbook.sh --dry-run    (print the protected set and the commands)
#   bash env/npu/install-cookbook.sh --pythonpath (no cookbook install: use the checkout)
#   bash env/npu/install-cookbook.sh --accuracy   (also lm-eval, for the accuracy step)
#
# Environment:
#   PYTHON   the Python to install into (default python3)
#   PIP_*    pip's own settings (index URL, PIP_FIND_LINKS for a local wheel folder) apply
set -euo pipefail

dry_run=0
pythonpath=0
accuracy=0
for arg in "$@"; do
  case "$arg" in
    --dry-run) dry_run=1 ;;
    --pythonpath) pythonpath=1 ;;
    --accuracy) accuracy=1 ;;
    -h | --help)
      sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"
      exit 0
      ;;
    *)
      echo "install-cookbook.sh: unknown argument '$arg' (see --help)" >&2
      exit 64
      ;;
  esac
done

script_path="${BASH_SOURCE[0]}"
[[ "$script_path" == */* ]] || script_path="./$script_path"
repo_root="$(cd "${script_path%/*}/../.." && pwd)"
python="${PYTHON:-python3}"

die() {
  printf 'install-cookbook.sh: error: %s\n' "$1" >&2
  exit 1
}

command -v "$python" >/dev/null 2>&1 || die "$python not found; set PYTHON to the container's Python"
[[ -f "$repo_root/pyproject.toml" ]] || die "no pyproject.toml in $repo_root"

# The image's stack. numpy: torch-npu and vllm-ascend are built against the image's numpy.
protected=(
  torch torch-npu torchvision torchaudio vllm vllm-ascend transformers triton-ascend numpy
  fastapi pydantic protobuf huggingface-hub tokenizers openai pillow modelscope
)

# "name==version" for each protected package installed in $python.
installed_versions() {
  "$python" - "${protected[@]}" <<'PY'
import importlib.metadata as md
import sys

for name in sys.argv[1:]:
    try:
        print(f"{name}=={md.version(name)}")
    except md.PackageNotFoundError:
        pass
PY
}

# The requirements of the notebooks extra (and lm-eval from the dev extra with --accuracy)
# that this Python does not satisfy yet; all of them when `packaging` is missing.
missing_tools() {
  "$python" - "$repo_root/pyproject.toml" "$accuracy" <<'PY'
import importlib.metadata as md
import re
import sys
import tomllib

extras = tomllib.load(open(sys.argv[1], "rb"))["project"]["optional-dependencies"]
wanted = list(extras["notebooks"])
if sys.argv[2] == "1":
    wanted += [r for r in extras["dev"] if re.match(r"lm[-_]eval\b", r)]
try:
    from packaging.requirements import Requirement
except ImportError:
    Requirement = None
for text in wanted:
    if Requirement is None:
        print(text)
        continue
    req = Requirement(text)
    try:
        if req.specifier.contains(md.version(req.name), prereleases=True):
            continue
    except md.PackageNotFoundError:
        pass
    print(text)
PY
}

before="$(installed_versions)"
if ((!dry_run)); then
  for needed in torch-npu vllm vllm-ascend; do
    grep -q "^$needed==" <<<"$before" ||
      die "$needed is not installed in $python: run this inside the vllm-ascend container (bash env/npu/run-container.sh), or set PYTHON to its Python"
  done
fi

# pip builds the cookbook with the image's setuptools (no build isolation, no download):
# it needs setuptools >= 68 (pyproject.toml), and the wheel package below setuptools 70.1.
can_build='
import importlib.util, setuptools, sys
v = tuple(int(p) for p in setuptools.__version__.split(".")[:2])
sys.exit(0 if v >= (70, 1) or (v >= (68, 0) and importlib.util.find_spec("wheel")) else 1)'
if ((!pythonpath)) && ! "$python" -c "$can_build" 2>/dev/null; then
  echo "install-cookbook.sh: $python cannot build the cookbook without a download (setuptools >= 68 and wheel, or >= 70.1): using the checkout from PYTHONPATH instead" >&2
  pythonpath=1
fi

workdir="$(mktemp -d "${TMPDIR:-/tmp}/install-cookbook.XXXXXX")"
trap 'rm -rf "$workdir"' EXIT
constraints="$workdir/constraints.txt"
printf '%s\n' "$before" | sed '/^$/d' >"$constraints"
tool_lines="$(missing_tools)" # a failure here stops the script (set -e)
mapfile -t tools < <(printf '%s\n' "$tool_lines" | sed '/^$/d')

pip=("$python" -m pip install --disable-pip-version-check)
install_cookbook=("${pip[@]}" --no-deps --no-build-isolation --no-index -e "$repo_root")
install_tools=("${pip[@]}" --no-build-isolation --prefer-binary --constraint "$constraints" "${tools[@]}")
use_checkout="export PYTHONPATH=$repo_root\${PYTHONPATH:+:\$PYTHONPATH}"

if ((dry_run)); then
  echo "# protected (pinned, compared before and after): ${protected[*]}"
  echo "# constraints file, from the versions installed in $python:"
  if [[ -s "$constraints" ]]; then
    sed 's/^/#   /' "$constraints"
  else
    echo "#   (none is installed in this Python; inside the container they are)"
  fi
  if ((pythonpath)); then
    echo "# no cookbook install; the checkout is used from PYTHONPATH:"
    echo "$use_checkout"
  else
    printf '%q ' "${install_cookbook[@]}"
    echo
  fi
  if ((${#tools[@]})); then
    printf '%q ' "${install_tools[@]}"
    echo
  else
    echo "# every notebook tool is installed already: pip is not called for them"
  fi
  echo "# then: compare the protected versions with the ones above; fail if any changed"
  exit 0
fi

echo "== protected packages (pinned with $constraints)"
sed 's/^/   /' "$constraints"
if ((pythonpath)); then
  echo "== cookbook not installed; use the checkout: $use_checkout"
else
  echo "== ${install_cookbook[*]}"
  "${install_cookbook[@]}"
fi
if ((${#tools[@]})); then
  echo "== ${install_tools[*]}"
  "${install_tools[@]}" || die "pip could not install ${tools[*]}; on an air-gapped runner, give pip a wheel folder (PIP_FIND_LINKS=DIR PIP_NO_INDEX=1) or use an image that has them"
else
  echo "== the notebook tools are installed already"
fi

after="$(installed_versions)"
if [[ "$before" != "$after" ]]; then
  {
    echo
    echo "install-cookbook.sh: ERROR: the install changed the stack the image ships:"
    diff <(printf '%s\n' "$before") <(printf '%s\n' "$after") | sed 's/^/   /' || true
    echo "Recreate the container from the image (bash env/npu/run-container.sh) and report"
    echo "which notebook tool needed the change."
  } >&2
  exit 1
fi

PYTHONPATH="$repo_root${PYTHONPATH:+:$PYTHONPATH}" "$python" -c "import cookbook" ||
  die "the cookbook does not import"
echo "== done; protected versions unchanged:"
sed 's/^/   /' "$constraints"
