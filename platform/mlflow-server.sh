#!/usr/bin/env bash
# MLflow tracking server + model registry for a team or a cluster.
#   platform/mlflow-server.sh [BACKEND_URI] [ARTIFACTS] [HOST] [PORT]
# Defaults: a SQLite store and artifacts under ./mlflow-server, on 127.0.0.1:5000.
# For a cluster use Postgres (postgresql://user:pw@host/mlflow) and S3 (s3://bucket/mlflow),
# and bind a private address. Full mlflow is needed (mlflow-skinny cannot serve).
set -euo pipefail
root=$(pwd)/mlflow-server
mkdir -p "$root"
backend=${1:-sqlite:///$root/mlflow.db}
artifacts=${2:-$root/artifacts}
host=${3:-127.0.0.1}
port=${4:-5000}
exec mlflow server --backend-store-uri "$backend" --artifacts-destination "$artifacts" \
  --serve-artifacts --host "$host" --port "$port"
