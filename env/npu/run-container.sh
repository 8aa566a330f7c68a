#!/usr/bin/env bash
# Start the vllm-ascend container with one Ascend NPU, the driver mounted from the host,
# a model cache that outlives the container, port 8000 published, and this repository
# mounted at /workspace/cookbook.
#
# Usage:
#   bash env/npu/run-container.sh [OPTIONS] [--] [COMMAND [ARG...]]
#
# Options:
#   --device N    NPU card to use, /dev/davinciN on the host (default 0; `npu-smi info`
#                 lists the cards). Inside the container it is device 0.
#   --name NAME   container name (default vllm-ascend-internvl)
#   --port P      host port published to the container's port 8000, where `vllm serve`
#                 listens by default (default 8000)
#   --cache DIR   host folder mounted on /root/.cache, where ModelScope
#                 (~/.cache/modelscope/hub) and Hugging Face (~/.cache/huggingface) keep
#                 downloaded models (default ~/.cache)
#   --chip C      a2, a3, 310p or auto (default): the image tag suffix for the chip.
#                 auto reads `npu-smi info` on this host: Atlas A2 (910B) the plain tag,
#                 A3 hosts ("Ascend910") -a3, Atlas 300I Duo (310P) -310p
#   --dry-run     print the docker command and exit; needs neither docker nor an NPU
#   -h, --help    show this help
# COMMAND runs inside the container instead of an interactive `bash`.
#
# Environment:
#   IMAGE         container image (default: [tool.cookbook.stack.npu].image in pyproject.toml,
#                 with the chip's suffix)
#
# The docker options are those of vllm-ascend's own single-card container command
# (docs/source/quick_start.md of its v0.23.0 release: --shm-size=1g, one /dev/davinciN, the
# three control devices, five driver mounts, the cache, port 8000); the variables in
# env/npu/npu.env are passed with --env-file.
set -euo pipefail

script_path="${BASH_SOURCE[0]}"
[[ "$script_path" == */* ]] || script_path="./$script_path"
script_dir="$(cd "${script_path%/*}" && pwd)"
repo_root="$(cd "$script_dir/../.." && pwd)"
env_file="$script_dir/npu.env"

usage() {
  local line
  while IFS= read -r line; do
    case "$line" in
      "#!"*) continue ;;
      "#"*) line="${line#\#}"; printf '%s\n' "${line# }" ;;
      *) return 0 ;;
    esac
  done <"${BASH_SOURCE[0]}"
}

die() {
  printf 'run-container.sh: error: %s\n' "$1" >&2
  exit "${2:-1}"
}

# The image pin lives in one place: [tool.cookbook.stack.npu] of pyproject.toml.
pinned_image() {
  local pyproject="$repo_root/pyproject.toml" line in_section=0 value=""
  [[ -f "$pyproject" ]] || return 1
  while IFS= read -r line; do
    if [[ "$line" =~ ^[[:space:]]*\[ ]]; then
      if [[ "$line" =~ ^[[:space:]]*\[tool\.cookbook\.stack\.npu\][[:space:]]*$ ]]; then
        in_section=1
      else
        in_section=0
      fi
    elif ((in_section)) && [[ "$line" =~ ^[[:space:]]*image[[:space:]]*=[[:space:]]*\"([^\"]+)\" ]]; then
      value="${BASH_REMATCH[1]}"
      break
    fi
  done <"$pyproject"
  [[ -n "$value" ]] || return 1
  printf '%s\n' "$value"
}

device=0
name=vllm-ascend-internvl
port=8000
cache="${HOME:-/root}/.cache"
chip=auto
dry_run=0
command_args=()

while (($#)); do
  case "$1" in
    --device)
      (($# >= 2)) || die "--device needs a card number, e.g. --device 0"
      device="$2"
      shift 2
      ;;
    --device=*) device="${1#*=}"; shift ;;
    --name)
      (($# >= 2)) || die "--name needs a container name"
      name="$2"
      shift 2
      ;;
    --name=*) name="${1#*=}"; shift ;;
    --port)
      (($# >= 2)) || die "--port needs a port number, e.g. --port 8000"
      port="$2"
      shift 2
      ;;
    --port=*) port="${1#*=}"; shift ;;
    --cache)
      (($# >= 2)) || die "--cache needs a folder, e.g. --cache ~/.cache"
      cache="$2"
      shift 2
      ;;
    --cache=*) cache="${1#*=}"; shift ;;
    --chip)
      (($# >= 2)) || die "--chip needs a2, a3, 310p or auto"
      chip="$2"
      shift 2
      ;;
    --chip=*) chip="${1#*=}"; shift ;;
    --dry-run) dry_run=1; shift ;;
    -h | --help) usage; exit 0 ;;
    --) shift; command_args=("$@"); break ;;
    -*) die "unknown option '$1' (see --help); put the container command after '--'" 2 ;;
    *) command_args=("$@"); break ;;
  esac
done

[[ "$device" =~ ^[0-9]{1,3}$ ]] ||
  die "--device must be a card number such as 0 (the N of /dev/davinciN), got '$device'" 2
device=$((10#$device))
if ! [[ "$port" =~ ^[0-9]{1,5}$ ]] || ((10#$port < 1 || 10#$port > 65535)); then
  die "--port must be a number from 1 to 65535, got '$port'" 2
fi
port=$((10#$port))
[[ -n "$name" ]] || die "--name must not be empty" 2
[[ -n "$cache" ]] || die "--cache must not be empty" 2
[[ "$cache" == /* ]] || cache="$PWD/$cache"
((${#command_args[@]})) || command_args=(bash)

# The chip family from this host's `npu-smi info`: the name column of the first NPU row
# (cookbook/envcheck.py, `chip`, reads it the same way).
detect_chip() {
  local out
  command -v npu-smi >/dev/null 2>&1 || { echo a2; return 0; }
  out="$(npu-smi info 2>/dev/null)" || { echo a2; return 0; }
  if grep -Eq '^\|[[:space:]]*[0-9]+[[:space:]]+[A-Za-z0-9_]*310P' <<<"$out"; then
    echo 310p
  elif grep -Eiq '^\|[[:space:]]*[0-9]+[[:space:]]+(Ascend)?910(_93[0-9]*)?[[:space:]]+\|' <<<"$out"; then
    echo a3
  else
    echo a2
  fi
}

[[ "$chip" == auto ]] && chip="$(detect_chip)"
case "$chip" in
  a2) suffix="" ;;
  a3) suffix="-a3" ;;
  310p)
    suffix="-310p"
    echo "run-container.sh: warning: Atlas 300I Duo (310P): vllm-ascend lists no InternVL support there and image requests are reported to fail (vllm-ascend #6082); models need dtype float16" >&2
    ;;
  *) die "--chip must be a2, a3, 310p or auto, got '$chip'" 2 ;;
esac

image="${IMAGE:-}"
if [[ -z "$image" ]]; then
  image="$(pinned_image)" ||
    die "could not read [tool.cookbook.stack.npu].image from $repo_root/pyproject.toml; set IMAGE=quay.io/ascend/vllm-ascend:<tag>"
  image+="$suffix"
fi

npu_device="/dev/davinci$device"
# Device nodes and driver files the container needs from the host (vllm-ascend quick_start.md).
control_devices=(/dev/davinci_manager /dev/devmm_svm /dev/hisi_hdc)
driver_mounts=(
  /usr/local/dcmi:/usr/local/dcmi
  /usr/local/bin/npu-smi:/usr/local/bin/npu-smi
  /usr/local/Ascend/driver/lib64/:/usr/local/Ascend/driver/lib64/
  /usr/local/Ascend/driver/version.info:/usr/local/Ascend/driver/version.info
  /etc/ascend_install.info:/etc/ascend_install.info
)

if ((!dry_run)); then
  command -v docker >/dev/null 2>&1 ||
    die "docker not found on PATH: install Docker on this NPU host (or use --dry-run to only print the command)"
  if [[ ! -e "$npu_device" ]]; then
    found=""
    for d in /dev/davinci[0-9]*; do
      [[ -e "$d" ]] && found+=" ${d#/dev/}"
    done
    if [[ -n "$found" ]]; then
      die "$npu_device not found; this host has:$found. Pick one with --device N (npu-smi info lists the cards)."
    fi
    die "$npu_device not found: this is not an Ascend NPU host, or the NPU driver is not installed (npu-smi info must list the card)."
  fi
  missing=()
  for d in "${control_devices[@]}"; do
    [[ -e "$d" ]] || missing+=("$d")
  done
  for m in "${driver_mounts[@]}"; do
    src="${m%%:*}"
    [[ -e "$src" ]] || missing+=("$src")
  done
  if ((${#missing[@]})); then
    die "missing on this host: ${missing[*]}. Install the Ascend driver and firmware (they provide these files), then retry."
  fi
  mkdir -p "$cache"
fi

cmd=(docker run --rm)
if [[ -t 0 && -t 1 ]]; then
  cmd+=(-it)
else
  cmd+=(-i)
fi
cmd+=(--name "$name")
# vLLM's worker processes share memory through /dev/shm; docker's default 64 MB is too
# small (vllm-ascend's newer docker commands add --shm-size=1g).
cmd+=(--shm-size 1g)
cmd+=(--device "$npu_device")
for d in "${control_devices[@]}"; do
  cmd+=(--device "$d")
done
for m in "${driver_mounts[@]}"; do
  cmd+=(-v "$m")
done
cmd+=(-v "$cache:/root/.cache")
cmd+=(-v "$repo_root:/workspace/cookbook")
cmd+=(-w /workspace/cookbook)
cmd+=(-p "$port:8000")
cmd+=(--env-file "$env_file")
if ((dry_run)); then
  # One option (with its value) per line, shell-quoted, so that the text can be pasted
  # to run it; the image and the command inside the container come last.
  out="docker run"
  i=2
  while ((i < ${#cmd[@]})); do
    arg="${cmd[$i]}"
    case "$arg" in
      --name | --shm-size | --device | -v | -w | -p | --env-file)
        out+=$' \\\n  '"$(printf '%q %q' "$arg" "${cmd[$((i + 1))]}")"
        i=$((i + 2))
        ;;
      *)
        out+=$' \\\n  '"$(printf '%q' "$arg")"
        i=$((i + 1))
        ;;
    esac
  done
  out+=$' \\\n  '"$(printf '%q' "$image")"
  out+=$' \\\n  '"$(printf '%q ' "${command_args[@]}")"
  printf '%s\n' "${out% }"
  exit 0
fi

cmd+=("$image" "${command_args[@]}")
exec "${cmd[@]}"
