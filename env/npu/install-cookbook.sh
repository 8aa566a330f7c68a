#!/usr/bin/env bash
# Install the cookbook and the notebook tools into the vllm-ascend container without
# changing the stack the image ships (torch, torch-npu, vllm, vllm-ascend, transformers
# and the packages next to them).
#
# How: the cookbook goes in with --no-deps (its few pure-Python dependencies are already
# in the image); the notebook tools ([project.optional-dependencies].notebooks in
# pyproject.toml) go in with a constraints file that pins every protected package to the
# version installed now, so pip fails rather than replace one. Afterwards the script
# compares the protected versions with the ones before and fails loudly if any changed.
#
# Usage:
#   bash env/npu/install-cookbook.sh            (inside the container)
#   bash env/npu/install-cookbook.sh --dry-run  (print the commands, change nothing)
#
# Environment:
#   PYTHON   the Python to install into (default python3)
#   PIP_*    pip's own settings (index URL, proxy) apply as usual
set -euo pipefail

dry_run=0
for arg in "$@"; do
  case "$arg" in
    --dry-run) dry_run=1 ;;
    -h | --help)
      sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"
      exit 0
      ;;
    *)
      echo "install-cookbook.sh: unknown argument '$arg' (use --dry-run or --help)" >&2
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

# Packages the image ships and this script must not change. numpy is here because
# torch-npu and vllm-ascend are built against the version in the image.
protected=(torch torch-npu torchvision torchaudio vllm vllm-ascend transformers triton-ascend numpy)

# "name==version" for each protected package installed in $python, sorted.
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

# The notebook tools, read from pyproject.toml so that the list lives in one place.
notebook_tools() {
  "$python" - "$repo_root/pyproject.toml" <<'PY'
import sys

try:
    import tomllib
except ModuleNotFoundError:
    sys.exit("install-cookbook.sh: reading pyproject.toml needs Python >= 3.11 (tomllib)")
with open(sys.argv[1], "rb") as fh:
    extras = tomllib.load(fh)["project"]["optional-dependencies"]
for requirement in extras["notebooks"]:
    print(requirement)
PY
}

before="$(installed_versions)"
mapfile -t tools < <(notebook_tools)
((${#tools[@]})) || die "no notebook tools found in [project.optional-dependencies].notebooks"

if ((!dry_run)); then
  for needed in torch-npu vllm vllm-ascend; do
    grep -q "^$needed==" <<<"$before" ||
      die "$needed is not installed in $python: run this inside the vllm-ascend container (bash env/npu/run-container.sh), or set PYTHON to its Python"
  done
fi

workdir="$(mktemp -d "${TMPDIR:-/tmp}/install-cookbook.XXXXXX")"
trap 'rm -rf "$workdir"' EXIT
constraints="$workdir/constraints.txt"
printf '%s\n' "$before" | sed '/^$/d' >"$constraints"

install_cookbook=("$python" -m pip install --no-deps -e "$repo_root")
install_tools=("$python" -m pip install --constraint "$constraints" "${tools[@]}")

if ((dry_run)); then
  echo "# constraints file $constraints, from the versions installed in $python:"
  if [[ -s "$constraints" ]]; then
    sed 's/^/#   /' "$constraints"
  else
    echo "#   (none of ${protected[*]} is installed here; inside the container they are)"
  fi
  printf '%q ' "${install_cookbook[@]}"
  echo
  printf '%q ' "${install_tools[@]}"
  echo
  echo "# then: compare the versions of ${protected[*]} with the ones above; fail if any changed"
  exit 0
fi

echo "== protected packages (pinned with $constraints)"
sed 's/^/   /' "$constraints"
echo "== ${install_cookbook[*]}"
"${install_cookbook[@]}"
echo "== ${install_tools[*]}"
"${install_tools[@]}"

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

"$python" -c "import cookbook" || die "the cookbook does not import after the install"
echo "== done: cookbook and notebook tools installed; protected versions unchanged:"
sed 's/^/   /' "$constraints"
