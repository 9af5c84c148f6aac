#!/usr/bin/env bash
# Distributed locust on one host: 1 master + N workers (each worker is one process = one core of load).
#   benchmarks/locust_distributed.sh [WORKERS] [USERS] [DURATION] [HOST]
#   e.g. benchmarks/locust_distributed.sh 2 32 60s 127.0.0.1:8001
# Results: build/locust/distributed_{stats,failures,stats_history}.csv; exit code != 0 if any request failed.
set -euo pipefail
cd "$(dirname "$0")/.."
WORKERS=${1:-2}; USERS=${2:-32}; DURATION=${3:-60s}; HOST=${4:-${TRIMODAL_URL:-127.0.0.1:8001}}
LOCUST=${LOCUST:-.venv-load/bin/locust}  # make loadtest: locust in a venv of its own
mkdir -p build/locust
pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; }
trap cleanup EXIT
for _ in $(seq "$WORKERS"); do
  "$LOCUST" -f benchmarks/locustfile.py --worker --master-host 127.0.0.1 --loglevel WARNING &
  pids+=($!)
done
"$LOCUST" -f benchmarks/locustfile.py --master --headless --expect-workers "$WORKERS" \
  --expect-workers-max-wait 60 -u "$USERS" -r "$USERS" -t "$DURATION" --host "$HOST" \
  --csv build/locust/distributed --only-summary
