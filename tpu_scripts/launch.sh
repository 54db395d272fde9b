#!/usr/bin/env bash
# Runs one mesh-t5 command on every worker of a TPU VM / pod slice at once (one process per host).
#   tpu_scripts/launch.sh --name=t5-pod --zone=europe-west4-a [--log=train.log] [--dry_run] -- \
#       train --gin_file=models/t5_11B.gin --gin_file=runs/pretrain.gin \
#       --gin.MODEL_DIR="'gs://bucket/t5_11b'" --gin.train.mesh_shape="'data:16,model:32'"
# Each worker finds the others through the TPU metadata (MESH_T5_DISTRIBUTED=auto makes mesh_t5
# call jax.distributed.initialize()), feeds its slice of every global batch and writes its own
# checkpoint shards, so MODEL_DIR must be shared storage (a gs:// bucket).
source "$(dirname "$0")/common.sh"
LOG="${LOG:-}"
usage() { sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//'; echo "flags: --name --zone --project --log --dry_run -- COMMAND ARGS"; }
parse_own_flag() {
  case "$1" in
    --log=*) LOG="${1#*=}" ;;
    *) return 1 ;;
  esac
}
parse_flags "$@"
require TPU_NAME --name
require ZONE --zone
if [[ ${#EXTRA_ARGS[@]} -eq 0 ]]; then
  echo "launch.sh: error: no command given; end the flags with -- then e.g. train --gin_file=..." >&2
  exit 2
fi
case "${EXTRA_ARGS[0]}" in
  train|eval|infer|export|demo) ;;
  *) echo "launch.sh: error: command ${EXTRA_ARGS[0]} is not one to run on every worker; use train, eval, infer, export or demo" >&2; exit 2 ;;
esac
remote="MESH_T5_DISTRIBUTED=auto mesh-t5 $(quote_words "${EXTRA_ARGS[@]}")"
[[ -n "$LOG" ]] && remote+=" 2>&1 | tee $(printf '%q' "$LOG")"
gcloud_tpu ssh "$TPU_NAME" --worker=all --command="$remote"
