#!/bin/bash
# Retrains recipes/matrix_h21_family_best.yaml (the h21 family study's best, chosen on validation) on split seeds
# 0, 1, 2 at 80% train through the results table, at autogroup nice 19, logging the load; writes
# bench/results/matrix_h21_results_table.{json,md}. Resumes: cells already in mlruns/mlflow.db are skipped.
cd "$(dirname "$0")/../.." || exit 1
CLI=${CICY_SEARCH:-.venv/bin/cicy-search}
[ -w /proc/self/autogroup ] && echo 19 > /proc/self/autogroup 2>/dev/null
echo "$(date -u +%FT%TZ) retrain start $(uptime | sed 's/.*load average: /load /')"
nice -n 19 $CLI results recipes/results.yaml --rows "study best (matrix_h21_family)" \
    --out bench/results/matrix_h21_results_table --tracking-uri "sqlite:///$PWD/mlruns/mlflow.db"
echo "$(date -u +%FT%TZ) retrain end rc=$? $(uptime | sed 's/.*load average: /load /')"
