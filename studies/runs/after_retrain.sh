#!/bin/bash
# After the retraining: the 120-epoch diagnostic of the best h11 config, then the h21 study until the session ends.
cd "$(dirname "$0")/../.." || exit 1
studies/runs/probes/run_probes.sh best_long > studies/runs/probes/probes3.log 2>&1
studies/runs/run_matrix.sh h21 "$1" > studies/runs/matrix_h21.log 2>&1
