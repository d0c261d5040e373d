#!/bin/bash
# Retrains one results-table row (fractions 0.8 and 0.3, split seeds 0, 1, 2) in two single-thread processes at
# once, into this worktree's MLflow store, then writes bench/results/OUT.{json,md} from MLflow. On 2 cores two
# one-thread trainings of the bipartite network did 1.34x the epochs of one two-thread training (8.0 s a 30%-train
# epoch each, against 5.4 s alone). The cells are split so both processes have about the same work: one trains 80%
# on seeds 0 and 1; the other 30% on seeds 0, 1, 2, then 80% on seed 2. The cells are the table's own (same config
# digests and tags), so `cicy-search results` counts them as done. Usage: retrain_two_procs.sh "ROW" OUT
cd "$(dirname "$0")/../.." || exit 1
ROW=${1:?usage: retrain_two_procs.sh ROW OUT}
OUT=${2:?usage: retrain_two_procs.sh ROW OUT}
PARTS=$(mktemp -d)
export PYTHONPATH=$PWD OMP_NUM_THREADS=1 TF_NUM_INTRAOP_THREADS=1 TF_NUM_INTEROP_THREADS=1
URI="sqlite:///$PWD/mlruns/mlflow.db"
mkdir -p mlruns
.venv/bin/python - "$ROW" "$PARTS" <<'PY' || exit 1
import sys
from pathlib import Path

import yaml

row_name, parts = sys.argv[1], Path(sys.argv[2])
table = yaml.safe_load(Path("recipes/results.yaml").read_text())
row = next(r for r in table["rows"] if r["name"] == row_name)
row = {**row, "config": str(Path("recipes", row["config"]).resolve())}
for name, seeds, fraction in (("A", [0, 1], 0.8), ("B1", [0, 1, 2], 0.3), ("B2", [2], 0.8)):
    part = {**table, "seeds": seeds, "rows": [{**row, "fractions": [fraction]}]}
    (parts / f"{name}.yaml").write_text(yaml.safe_dump(part, sort_keys=False))
PY
part() {  # LOG PART...: the parts in order, each a `cicy-search results` run
  local log=$1; shift
  for p in "$@"; do
    echo "$(date -u +%FT%TZ) part $p start $(uptime | sed 's/.*load average: /load /')" >> "$log"
    .venv/bin/cicy-search results "$PARTS/$p.yaml" --out "$PARTS/$p" --tracking-uri "$URI" >> "$log" 2>&1
    echo "$(date -u +%FT%TZ) part $p end rc=$? $(uptime | sed 's/.*load average: /load /')" >> "$log"
  done
}
part "studies/runs/${OUT}_A.log" A &
part "studies/runs/${OUT}_B.log" B1 B2 &
wait
.venv/bin/cicy-search results recipes/results.yaml --rows "$ROW" --no-train --out "bench/results/$OUT" --tracking-uri "$URI"
