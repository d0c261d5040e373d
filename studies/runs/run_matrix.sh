#!/bin/bash
# Runs (or resumes) studies/matrix_TARGET.yaml on its committed journal storage, niced, 2 TensorFlow threads,
# logging the load every 5 minutes. Usage: studies/runs/run_matrix.sh h11|h21|h11_family SECONDS (no trial starts
# after that). NICE=19 runs it at the lowest priority (default 10); CICY_SEARCH names the CLI (default .venv's).
# The study's MLflow runs go to this checkout's mlruns/mlflow.db: a study made on another machine is moved there
# first (study create --move-tracking; its earlier runs stay in the old store).
cd "$(dirname "$0")/../.." || exit 1
NAME=matrix_${1:?usage: run_matrix.sh h11|h21|h11_family SECONDS}
NICE=${NICE:-10}
CLI=${CICY_SEARCH:-.venv/bin/cicy-search}
STORE=journal:studies/runs/$NAME.journal
TRACK=sqlite:///$PWD/mlruns/mlflow.db
mkdir -p mlruns
# With autogroup scheduling (Linux's default for desktop and many cloud kernels), a nice value only ranks processes
# of one session: a study started with setsid/nohup in its own session took half of the 2 cores from a test run at
# nice 0 in another. Setting the session's own nice makes NICE mean what it says across sessions too.
[ -w /proc/self/autogroup ] && echo "$NICE" > /proc/self/autogroup 2>/dev/null
( while true; do echo "$(date -u +%FT%TZ) $(uptime | sed 's/.*load average: /load /')"; sleep 300; done ) >> studies/runs/$NAME.load.log &
LOADLOG=$!
trap 'kill $LOADLOG' EXIT
nice -n "$NICE" $CLI study create studies/$NAME.yaml --storage $STORE --tracking-uri $TRACK --move-tracking || exit
nice -n "$NICE" $CLI worker studies/$NAME.yaml --storage $STORE --tracking-uri $TRACK --threads 2 --timeout "${2:-3600}"
rc=$?  # before any command substitution, which would set $? again
echo "$(date -u +%FT%TZ) worker exited rc=$rc $(uptime | sed 's/.*load average: /load /')" >> studies/runs/$NAME.load.log
