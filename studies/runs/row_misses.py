"""Which test matrices a results-table row's models miss, over its split seeds: by h11 class, and by matrix.

Each finished cell's run holds ``test_misses.json`` (the test matrices its model gets wrong, by id). This reads them
for one row and train fraction, rebuilds each seed's test split to know which matrices each model was tested on,
and writes a markdown report: the misses per h11 class beside the class's test count, and the matrices missed, most-missed
first, with their number of projective factors (rows): h11 above that number marks a manifold that is not
favourable, whose h11 the ambient space does not give. Reads only what the cells logged; trains nothing.

    PYTHONPATH=$PWD .venv/bin/python studies/runs/row_misses.py "ROW" FRACTION OUT.md [TABLE] [TRACKING_URI]

TABLE defaults to recipes/results.yaml, TRACKING_URI to this worktree's mlruns/mlflow.db (as retrain_matrix_h11.sh).
"""

import json
import os
import sys
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np
from mlflow import MlflowClient

from cicy_search import data
from cicy_search.experiments import results
from cicy_search.tracking.runner import MISSES

os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
SHOWN = 40  # matrices listed

row_name, fraction, out = sys.argv[1], float(sys.argv[2]), Path(sys.argv[3])
table_file = sys.argv[4] if len(sys.argv) > 4 else "recipes/results.yaml"
uri = sys.argv[5] if len(sys.argv) > 5 else f"sqlite:///{Path.cwd()}/mlruns/mlflow.db"
table = results.load_table(table_file)
client = MlflowClient(uri)
row = next(r for r in table["rows"] if r["name"] == row_name)

tested, missed, per_seed = Counter(), {}, []
h11_of, rows_of = {}, {}
for seed in table["seeds"]:
    cfg = results.cell_config(row, fraction, seed, table["val"])
    run = results.cell_run(client, table, row, fraction, seed)
    if run is None or not any(a.path == MISSES for a in client.list_artifacts(run.info.run_id)):
        print(f"seed {seed}: no finished run with {MISSES}")
        continue
    with tempfile.TemporaryDirectory() as tmp:
        misses = json.loads(Path(client.download_artifacts(run.info.run_id, MISSES, tmp)).read_text())
    dataset, split = data.select(cfg["data"])
    ids = dataset.frame["id"].to_numpy()[split.test]
    factors = (np.abs(dataset.x[split.test]).sum(axis=2) > 0).sum(axis=1)
    for i, h, r in zip(ids.tolist(), dataset.y("h11")[split.test].tolist(), factors.tolist()):
        tested[i] += 1
        h11_of[i], rows_of[i] = h, r
    for m in misses:
        missed.setdefault(m["id"], {})[seed] = m["h11_pred"]
    per_seed.append((seed, len(ids), len(misses), run.data.metrics.get("test_h11_accuracy")))

lines = [f"# {row_name}, {fraction:.0%} train: the test matrices its models miss", "",
         f"`PYTHONPATH=$PWD .venv/bin/python studies/runs/row_misses.py \"{row_name}\" {fraction:g} {out}`", "",
         "| split seed | test matrices | missed | test h11 accuracy |", "|---|---|---|---|"]
lines += [f"| {s} | {n} | {k} | {acc:.4f} |" for s, n, k, acc in per_seed]
classes, miss_class = Counter(), Counter()  # per h11: tested and missed, summed over the seeds
for i, n in tested.items():
    classes[h11_of[i]] += n
for i, seeds in missed.items():
    miss_class[h11_of[i]] += len(seeds)
lines += ["", "By true h11 (test matrices and misses summed over the seeds):", "",
          "| h11 | tested | missed | missed % |", "|---|---|---|---|"]
lines += [f"| {h} | {classes[h]} | {miss_class[h]} | {100 * miss_class[h] / classes[h]:.1f} |" for h in sorted(classes) if miss_class[h]]
tested_favourable = sum(n for i, n in tested.items() if h11_of[i] == rows_of[i])
missed_favourable = sum(len(s) for i, s in missed.items() if h11_of[i] == rows_of[i])
total_tested, total_missed = sum(tested.values()), sum(len(s) for s in missed.values())
lines += ["", f"h11 equal to the number of projective factors (favourable): {missed_favourable} misses in "
          f"{tested_favourable} tested; h11 above it: {total_missed - missed_favourable} in {total_tested - tested_favourable}."]
order = sorted(missed, key=lambda i: (-len(missed[i]), h11_of[i], i))
repeated = sum(len(missed[i]) > 1 for i in order)
lines += ["", f"{len(order)} matrices missed, {repeated} of them by more than one seed; most missed first"
          f"{f' (the first {SHOWN})' if len(order) > SHOWN else ''}:", "",
          "| id | h11 | factors | seeds testing it | predicted (seed: h11) |", "|---|---|---|---|---|"]
lines += [f"| {i} | {h11_of[i]} | {rows_of[i]} | {tested[i]} | {', '.join(f'{s}: {p}' for s, p in sorted(missed[i].items()))} |"
          for i in order[:SHOWN]]
out.write_text("\n".join(lines) + "\n")
print(out.read_text())
