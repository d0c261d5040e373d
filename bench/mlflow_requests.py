"""What each MLflow request of a study trial costs the process that makes it (CPU time of the calling thread).

    .venv/bin/python -m bench.mlflow_requests [--repeat 30] [--tracking-uri URI]

A trial's run is made the way ``tracking.runner.run_tracked`` makes it, one request at a time: created with its
tags (12), its dataset inputs (3 splits), its params (45) with the first epoch's 4 curves, the other 19 epochs'
curves with a final metric and the end's tag, the end; and, for scale, a batch with a single tag.
Default store: a new SQLite file (the quickstart's); ``--tracking-uri`` points it at a server, whose own CPU is not
counted here (``bench.tracking --server`` counts it). Writes ``bench/results/mlflow_requests.json``: the median and
the spread (10th, 90th percentile) of each request's CPU in ms over ``--repeat`` runs, after 3 unmeasured runs.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

N_TAGS, N_PARAMS, N_EPOCHS, CURVES = 12, 45, 20, ("loss", "accuracy", "val_loss", "val_accuracy")


def one_run(client, experiment_id: str, inputs: list) -> dict[str, float]:
    """One trial-shaped run, request by request; CPU seconds of each."""
    from mlflow.entities import Metric, Param, RunTag

    spent = {}

    def timed(name, fn, *args, **kwargs):
        t0 = time.thread_time()
        out = fn(*args, **kwargs)
        spent[name] = time.thread_time() - t0
        return out

    run_id = timed("create_run", client.create_run, experiment_id, tags={f"tag{i}": "x" * 20 for i in range(N_TAGS)}, run_name="trial").info.run_id
    timed("log_inputs", client.log_inputs, run_id, datasets=inputs)
    now = int(time.time() * 1000)
    first = [Metric(f"epoch_{c}", 0.5, now, 0) for c in CURVES]
    timed("log_batch: params + first metrics", client.log_batch, run_id, params=[Param(f"p.{i}", str(i)) for i in range(N_PARAMS)], metrics=first)
    rest = [Metric(f"epoch_{c}", 0.5, now, e) for e in range(1, N_EPOCHS) for c in CURVES] + [Metric("val_accuracy", 0.5, now, N_EPOCHS)]
    timed("log_batch: 77 metrics + a tag (the end)", client.log_batch, run_id, metrics=rest, tags=[RunTag("state", "complete")])
    timed("log_batch: one tag", client.log_batch, run_id, tags=[RunTag("note", "x")])
    timed("set_terminated", client.set_terminated, run_id)
    return spent


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--tracking-uri", default=None, help="default: a new SQLite store in a temporary folder")
    parser.add_argument("--out", type=Path, default=Path("bench/results/mlflow_requests.json"))
    args = parser.parse_args(argv)
    import numpy as np

    from cicy_search import data, tracking

    uri = args.tracking_uri or f"sqlite:///{Path(tempfile.mkdtemp(prefix='bench-requests-')) / 'mlflow.db'}"
    client = tracking.client(uri)
    experiment_id = tracking.experiment_id(client, f"bench-requests-{os.getpid()}")
    d = {"dataset": "original", "train": 0.8, "val": 0.1, "test": 0.1, "seed": 0}
    index = {"train": np.arange(6312), "val": np.arange(6312, 7101), "test": np.arange(7101, 7890)}
    inputs = tracking.dataset_inputs(d, data.dataset_hash("original"), index)
    load_before = os.getloadavg()
    for _ in range(3):
        one_run(client, experiment_id, inputs)
    runs = [one_run(client, experiment_id, inputs) for _ in range(args.repeat)]
    result = {"tracking": "server" if uri.startswith("http") else "SQLite store", "repeat": args.repeat, "requests": {}}
    for name in runs[0]:
        ms = sorted(1000 * r[name] for r in runs)
        result["requests"][name] = {"median_ms": round(statistics.median(ms), 2), "p10_ms": round(float(np.percentile(ms, 10)), 2),
                                    "p90_ms": round(float(np.percentile(ms, 90)), 2)}  # fmt: skip
    result["median_run_ms"] = round(statistics.median(1000 * sum(r.values()) - 1000 * r["log_batch: one tag"] for r in runs), 2)
    result["load_average_before"], result["load_average_after"] = load_before, os.getloadavg()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"CPU of each MLflow request of a trial's run ({result['tracking']}, median of {args.repeat} runs, 10th-90th percentile):")
    for name, r in result["requests"].items():
        print(f"  {name:42s} {r['median_ms']:6.1f} ms  ({r['p10_ms']:.1f}-{r['p90_ms']:.1f})")
    print(f"a run's requests (without the single tag): {result['median_run_ms']:.0f} ms; load average "
          f"{' '.join(f'{v:.2f}' for v in load_before)} before, {' '.join(f'{v:.2f}' for v in result['load_average_after'])} after")
    return result


if __name__ == "__main__":
    main()
