#!/bin/bash
# Runs (or resumes) studies/matrix_h11.yaml from this worktree on its journal storage, niced, 2 TensorFlow threads,
# logging the load every 5 minutes. Usage: studies/runs/run_matrix_h11.sh SECONDS (no trial starts after that).
cd "$(dirname "$0")/../.." || exit 1
export PYTHONPATH=$PWD
CLI=/work/main/.venv/bin/cicy-search
STORE=journal:studies/runs/matrix_h11.journal
TRACK=sqlite:///$PWD/mlruns/mlflow.db
mkdir -p mlruns
( while true; do echo "$(date -u +%FT%TZ) $(uptime | sed 's/.*load average: /load /')"; sleep 300; done ) >> studies/runs/matrix_h11.load.log &
LOADLOG=$!
trap 'kill $LOADLOG' EXIT
nice -n 10 $CLI study create studies/matrix_h11.yaml --storage $STORE --tracking-uri $TRACK
nice -n 10 $CLI worker studies/matrix_h11.yaml --storage $STORE --tracking-uri $TRACK --threads 2 --timeout "${1:-3600}"
echo "$(date -u +%FT%TZ) worker exited rc=$? $(uptime | sed 's/.*load average: /load /')" >> studies/runs/matrix_h11.load.log
