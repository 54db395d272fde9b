# Shared by the tpu_scripts: flag parsing and a `run` that prints instead of running under --dry_run.
# Flags (also as environment variables of the same name in upper case, e.g. TPU_NAME, ZONE):
#   --name=TPU_NAME  --zone=ZONE  --project=PROJECT  --dry_run
# Anything after `--` is collected in EXTRA_ARGS (the mesh-t5 command line for launch.sh).

set -euo pipefail

TPU_NAME="${TPU_NAME:-}"
ZONE="${ZONE:-}"
PROJECT="${PROJECT:-}"
DRY_RUN="${DRY_RUN:-0}"
EXTRA_ARGS=()

# parse_flags "$@": sets the common variables; calls `parse_own_flag FLAG` (defined by the script) for others.
parse_flags() {
  while [[ $# -gt 0 ]]; do
    case "$1" in
      --name=*) TPU_NAME="${1#*=}" ;;
      --zone=*) ZONE="${1#*=}" ;;
      --project=*) PROJECT="${1#*=}" ;;
      --dry_run) DRY_RUN=1 ;;
      -h|--help) usage; exit 0 ;;
      --) shift; EXTRA_ARGS=("$@"); break ;;
      *)
        if ! declare -F parse_own_flag >/dev/null || ! parse_own_flag "$1"; then
          echo "$(basename "$0"): error: unknown flag $1; see --help" >&2
          exit 2
        fi ;;
    esac
    shift
  done
}

require() {  # require VAR_NAME FLAG: one clear line when a needed setting is missing
  if [[ -z "${!1:-}" ]]; then
    echo "$(basename "$0"): error: $2 is not set; pass $2=VALUE (or set $1)" >&2
    exit 2
  fi
}

run() {  # run CMD ARGS...: print the command (shell-quoted); execute it unless --dry_run
  printf '+'; printf ' %q' "$@"; printf '\n'
  if [[ "$DRY_RUN" != 1 ]]; then
    "$@"
  fi
}

gcloud_tpu() {  # gcloud_tpu SUBCOMMAND ARGS...: `gcloud compute tpus tpu-vm` with zone/project
  local args=(gcloud compute tpus tpu-vm "$@" --zone="$ZONE")
  [[ -n "$PROJECT" ]] && args+=(--project="$PROJECT")
  run "${args[@]}"
}

# A command line as one shell string (for `ssh --command`), each word quoted.
quote_words() { local out="" w; for w in "$@"; do out+="$(printf '%q' "$w") "; done; printf '%s' "${out% }"; }
