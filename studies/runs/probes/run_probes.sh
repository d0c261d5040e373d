#!/bin/bash
# Probes: 8 epochs each on the full original list, canonical matrices, no invariants; one after the other.
cd /work/wt-science
export PYTHONPATH=/work/wt-science OMP_NUM_THREADS=2 TF_NUM_INTRAOP_THREADS=2 TF_NUM_INTEROP_THREADS=2
for p in "$@"; do
  echo "=== $p start $(date -u +%T) load: $(uptime | sed 's/.*load average: //')"
  /usr/bin/time -f "wall %e s" nice -n 10 /work/main/.venv/bin/cicy-search train studies/runs/probes/p_$p.yaml \
     --tracking-uri sqlite:///mlruns/mlflow.db --experiment matrix-probes 2>&1 | grep -v "^\s*$" | tail -25
  echo "=== $p end $(date -u +%T) load: $(uptime | sed 's/.*load average: //')"
done
