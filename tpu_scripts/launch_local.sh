#!/usr/bin/env bash
# Runs a mesh-t5 command as N cooperating processes on this machine (CPU), joined by jax.distributed
# on localhost: rehearse a multi-host run before paying for one.
#   tpu_scripts/launch_local.sh --num_processes=2 --devices_per_process=4 [--port=12355] [--dry_run] -- \
#       train --gin_file=models/tiny.gin --gin_file=runs/pretrain.gin --gin.train.mesh_shape="'data:8'" ...
# Process i writes its output to $LOG_DIR/process_i.log (default ./mesh_t5_local_logs).
source "$(dirname "$0")/common.sh"
NUM_PROCESSES=2
DEVICES_PER_PROCESS=1
PORT="${MESH_T5_PORT:-12355}"
LOG_DIR="${LOG_DIR:-mesh_t5_local_logs}"
usage() { sed -n '2,7p' "$0" | sed 's/^# \{0,1\}//'; echo "flags: --num_processes --devices_per_process --port --log_dir --dry_run -- COMMAND ARGS"; }
parse_own_flag() {
  case "$1" in
    --num_processes=*) NUM_PROCESSES="${1#*=}" ;;
    --devices_per_process=*) DEVICES_PER_PROCESS="${1#*=}" ;;
    --port=*) PORT="${1#*=}" ;;
    --log_dir=*) LOG_DIR="${1#*=}" ;;
    *) return 1 ;;
  esac
}
parse_flags "$@"
if [[ ${#EXTRA_ARGS[@]} -eq 0 ]]; then
  echo "launch_local.sh: error: no command given; end the flags with -- then e.g. train --gin_file=..." >&2
  exit 2
fi
[[ "$DRY_RUN" == 1 ]] || mkdir -p "$LOG_DIR"
pids=()
for ((i = 0; i < NUM_PROCESSES; i++)); do
  env_args=(env JAX_PLATFORMS=cpu "XLA_FLAGS=--xla_force_host_platform_device_count=$DEVICES_PER_PROCESS"
            "MESH_T5_COORDINATOR_ADDRESS=localhost:$PORT" "MESH_T5_NUM_PROCESSES=$NUM_PROCESSES" "MESH_T5_PROCESS_ID=$i")
  printf '+'; printf ' %q' "${env_args[@]}" mesh-t5 "${EXTRA_ARGS[@]}"; printf ' > %q 2>&1 &\n' "$LOG_DIR/process_$i.log"
  if [[ "$DRY_RUN" != 1 ]]; then
    "${env_args[@]}" mesh-t5 "${EXTRA_ARGS[@]}" > "$LOG_DIR/process_$i.log" 2>&1 &
    pids+=($!)
  fi
done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=$?; done
[[ "$DRY_RUN" == 1 ]] || echo "logs: $LOG_DIR/process_*.log (exit status $status)"
exit "$status"
