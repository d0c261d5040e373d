#!/bin/bash
# Runs (or resumes) studies/STUDY.yaml from this worktree on its journal studies/runs/STUDY.journal, niced, 2
# TensorFlow threads, logging the load every 5 minutes to studies/runs/STUDY.load.log.
# Usage: studies/runs/run_study.sh STUDY SECONDS   (e.g. matrix_h11 3600: no trial starts after SECONDS)
cd "$(dirname "$0")/../.." || exit 1
STUDY=${1:?usage: run_study.sh STUDY SECONDS}
export PYTHONPATH=$PWD
CLI=/work/main/.venv/bin/cicy-search
[ -x "$CLI" ] || CLI=$PWD/.venv/bin/cicy-search
STORE=journal:studies/runs/$STUDY.journal
TRACK=sqlite:///$PWD/mlruns/mlflow.db
mkdir -p mlruns
( while true; do echo "$(date -u +%FT%TZ) $(uptime | sed 's/.*load average: /load /')"; sleep 300; done ) >> "studies/runs/$STUDY.load.log" &
LOADLOG=$!
trap 'kill $LOADLOG' EXIT
nice -n 10 $CLI study create "studies/$STUDY.yaml" --storage "$STORE" --tracking-uri "$TRACK"
nice -n 10 $CLI worker "studies/$STUDY.yaml" --storage "$STORE" --tracking-uri "$TRACK" --threads 2 --timeout "${2:-3600}"
echo "$(date -u +%FT%TZ) worker exited rc=$? $(uptime | sed 's/.*load average: /load /')" >> "studies/runs/$STUDY.load.log"
