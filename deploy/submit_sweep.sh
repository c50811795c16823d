#!/usr/bin/env bash
# Submit a DDRN sweep to a running Ray cluster (deploy/ray-cluster.yaml or kuberay-cluster.yaml).
#
#   RAY_ADDRESS=http://127.0.0.1:8265 deploy/submit_sweep.sh [--resume] [--num-samples N]
#
# Env: RAY_ADDRESS (the job API, default http://127.0.0.1:8265), RAY_AUTH_MODE/RAY_AUTH_TOKEN
# (must match the cluster), SHARED (the path every node mounts, default /mnt/shared),
# MLFLOW_TRACKING_URI (default http://mlflow:5000), MLFLOW_TRACKING_USERNAME/PASSWORD (the
# server's basic auth; default admin and /mnt/shared/mlflow_admin_password), PROFILE (default:
# params.yaml's profile).
# The working dir (this repository, minus .gitignore'd paths: no data, no checkpoints) is
# uploaded; the packed data must already be on the shared mount (`dvc pull` there once).
set -euo pipefail
cd "$(dirname "$0")/.."

: "${RAY_ADDRESS:=http://127.0.0.1:8265}"
: "${RAY_AUTH_MODE:=token}"
: "${SHARED:=/mnt/shared}"
: "${MLFLOW_TRACKING_URI:=http://mlflow:5000}"
: "${MLFLOW_TRACKING_USERNAME:=admin}"
if [[ -z "${MLFLOW_TRACKING_PASSWORD:-}" && -r "$SHARED/mlflow_admin_password" ]]; then
  MLFLOW_TRACKING_PASSWORD=$(cat "$SHARED/mlflow_admin_password")
fi
export RAY_ADDRESS RAY_AUTH_MODE

profile_args=()
if [[ -n "${PROFILE:-}" ]]; then profile_args=(--profile "$PROFILE"); fi

# The image already holds the dependencies; the uploaded working dir is on every trial's
# sys.path, so ddrn/ and pipeline/ import without an install.
runtime_env=$(cat <<JSON
{"env_vars": {"MLFLOW_TRACKING_URI": "$MLFLOW_TRACKING_URI", "TUNE_GLOBAL_CHECKPOINT_S": "5",
              "RAY_AUTH_MODE": "$RAY_AUTH_MODE",
              "MLFLOW_TRACKING_USERNAME": "$MLFLOW_TRACKING_USERNAME",
              "MLFLOW_TRACKING_PASSWORD": "${MLFLOW_TRACKING_PASSWORD:-}"}}
JSON
)

# The driver runs on the head; inside the job RAY_ADDRESS is set, so pipeline.sweep.search joins this
# cluster instead of starting a local Ray. --resume continues a sweep interrupted earlier.
exec ray job submit --address "$RAY_ADDRESS" --working-dir . \
  --runtime-env-json "$runtime_env" -- \
  python -m pipeline.sweep "${profile_args[@]}" \
    --data "$SHARED/data/packed" --storage-path "$SHARED/ray_results" \
    --out "$SHARED/reports" "$@"
