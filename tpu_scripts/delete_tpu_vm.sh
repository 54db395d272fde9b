#!/usr/bin/env bash
# Deletes a TPU VM / pod slice (billing stops).
#   tpu_scripts/delete_tpu_vm.sh --name=t5-pod --zone=europe-west4-a [--dry_run]
source "$(dirname "$0")/common.sh"
usage() { sed -n '2,3p' "$0" | sed 's/^# \{0,1\}//'; echo "flags: --name --zone --project --dry_run"; }
parse_flags "$@"
require TPU_NAME --name
require ZONE --zone
gcloud_tpu delete "$TPU_NAME" --quiet
