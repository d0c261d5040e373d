#!/bin/bash
# Retrains recipes/matrix_h11_best.yaml through the results table (row "study best (matrix_h11)": split seeds 0, 1, 2
# at 80% then 30% train; resumes: finished cells are skipped), niced, 2 TensorFlow threads, into this worktree's
# MLflow store; writes bench/results/${OUT:-matrix_results_table}.{json,md} (the whole table, only cells in this store
# filled). ROWS names other rows, e.g. ROWS="study best (matrix_h11_long)" OUT=matrix_long_results_table; NICE its nice.
cd "$(dirname "$0")/../.." || exit 1
export PYTHONPATH=$PWD OMP_NUM_THREADS=2 TF_NUM_INTRAOP_THREADS=2 TF_NUM_INTEROP_THREADS=2
echo "$(date -u +%FT%TZ) retrain start $(uptime | sed 's/.*load average: /load /')"
nice -n "${NICE:-10}" "${CICY_SEARCH:-.venv/bin/cicy-search}" results recipes/results.yaml --rows "${ROWS:-study best (matrix_h11)}" \
  --out "bench/results/${OUT:-matrix_results_table}" --tracking-uri "sqlite:///$PWD/mlruns/mlflow.db"
rc=$?
echo "$(date -u +%FT%TZ) retrain end rc=$rc $(uptime | sed 's/.*load average: /load /')"
