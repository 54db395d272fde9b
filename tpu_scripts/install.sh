#!/usr/bin/env bash
# Installs JAX for TPU and mesh_t5 on every worker of a TPU VM / pod slice.
#   tpu_scripts/install.sh --name=t5-pod --zone=europe-west4-a [--wheel=dist/mesh_t5-0.1.0-py3-none-any.whl | --source=git+https://...] [--dry_run]
# With --wheel the file is copied to every worker first; with --source pip installs that spec.
source "$(dirname "$0")/common.sh"
WHEEL="${WHEEL:-}"
SOURCE="${SOURCE:-mesh_t5}"
JAX_SPEC="${JAX_SPEC:-jax[tpu]>=0.10,<0.11}"
usage() { sed -n '2,4p' "$0" | sed 's/^# \{0,1\}//'; echo "flags: --name --zone --project --wheel --source --jax --dry_run"; }
parse_own_flag() {
  case "$1" in
    --wheel=*) WHEEL="${1#*=}" ;;
    --source=*) SOURCE="${1#*=}" ;;
    --jax=*) JAX_SPEC="${1#*=}" ;;
    *) return 1 ;;
  esac
}
parse_flags "$@"
require TPU_NAME --name
require ZONE --zone
if [[ -n "$WHEEL" ]]; then
  gcloud_tpu scp "$WHEEL" "$TPU_NAME:~/" --worker=all
  SOURCE="./$(basename "$WHEEL")"  # relative to the home directory ssh starts in
fi
install="python3 -m pip install --upgrade pip && python3 -m pip install $(quote_words "$JAX_SPEC" "$SOURCE")"
gcloud_tpu ssh "$TPU_NAME" --worker=all --command="$install"
