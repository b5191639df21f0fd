#!/usr/bin/env bash
# The retrieval service env runners share (Search-R1 API: POST /retrieve).
#   platform/retriever-service.sh CORPUS.jsonl [bm25|dense|hybrid] [HOST] [PORT]
# Builds the index on first use (cached beside the corpus), then serves. Loopback by default;
# pass a private address as HOST on a cluster (the service has no authentication).
set -euo pipefail
corpus=${1:?usage: retriever-service.sh CORPUS.jsonl [bm25|dense|hybrid] [HOST] [PORT]}
exec mem1 serve retriever --corpus "$corpus" --index "${2:-bm25}" --host "${3:-127.0.0.1}" --port "${4:-8000}"
