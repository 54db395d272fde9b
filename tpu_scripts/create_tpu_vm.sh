#!/usr/bin/env bash
# Creates a Cloud TPU VM or pod slice (every worker of a slice is a host running one process).
#   tpu_scripts/create_tpu_vm.sh --name=t5-pod --zone=europe-west4-a --accelerator_type=v3-512 [--spot] [--dry_run]
# A v3-512 slice has 512 cores (64 hosts x 8): mesh_shape data:16,model:32 runs T5 11B as in the paper.
source "$(dirname "$0")/common.sh"
ACCELERATOR_TYPE="${ACCELERATOR_TYPE:-v3-8}"
RUNTIME_VERSION="${RUNTIME_VERSION:-tpu-ubuntu2204-base}"
SPOT=0
usage() { sed -n '2,4p' "$0" | sed 's/^# \{0,1\}//'; echo "flags: --name --zone --project --accelerator_type --version --spot --dry_run"; }
parse_own_flag() {
  case "$1" in
    --accelerator_type=*) ACCELERATOR_TYPE="${1#*=}" ;;
    --version=*) RUNTIME_VERSION="${1#*=}" ;;
    --spot) SPOT=1 ;;
    *) return 1 ;;
  esac
}
parse_flags "$@"
require TPU_NAME --name
require ZONE --zone
args=(create "$TPU_NAME" --accelerator-type="$ACCELERATOR_TYPE" --version="$RUNTIME_VERSION")
[[ "$SPOT" == 1 ]] && args+=(--spot)
gcloud_tpu "${args[@]}"
