"""Pack several trainings onto one device: aggregate samples per second of K concurrent processes.

A small network leaves most of a large GPU idle; the remedy is several trial processes per GPU, i.e.
several ``cicy-search worker`` processes started with the same ``--gpu`` (memory growth on, or a
``--gpu-memory`` cap each). This runs K such processes, each training the same config with the worker's
device settings (``cicy_search.search.worker.configure_environment``), and compares their total throughput
with one process's. Without a GPU it measures the same on the CPU, splitting its cores between them.

    python -m bench.pack [--procs 1,2,4] [--gpu 0] [--gpu-memory 8000] [--epochs 20] [--family dense]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


def worker(args) -> None:
    """One packed process: device settings first (before TensorFlow loads), then one timed training."""
    from cicy_search.search.worker import configure_environment, configure_tensorflow

    configure_environment(gpu=args.gpu, threads=args.threads, gpu_memory_mb=args.gpu_memory)
    configure_tensorflow(gpu=args.gpu, threads=args.threads, gpu_memory_mb=args.gpu_memory)
    from cicy_search import tracking
    from cicy_search.config import resolve
    from cicy_search.training import fit, prepare

    config = resolve({"model": {"family": args.family}, "data": {"limit": args.limit}, "train": {"epochs": args.epochs}})
    prepared = prepare(config)
    start = time.time()
    result = fit(config, prepared)
    end = time.time()
    samples = result.epochs_run * len(prepared.x["train"])
    Path(args.report).write_text(json.dumps({
        "start": start, "end": end, "train_seconds": result.seconds, "samples": samples,
        "val_accuracy": result.metrics["val_accuracy"], "device": tracking.device(),
    }))


def run_packed(k: int, args) -> dict:
    """Start ``k`` workers at once; throughput = the samples they trained over the span of their whole trials
    (compiling, training and scoring; not starting Python and TensorFlow)."""
    threads = args.threads or (None if args.gpu is not None else max(1, (os.cpu_count() or 1) // k))
    with tempfile.TemporaryDirectory() as tmp:
        reports = [Path(tmp) / f"{i}.json" for i in range(k)]
        procs = [
            subprocess.Popen([
                sys.executable, "-m", "bench.pack", "--worker", "--report", str(r), "--family", args.family,
                "--epochs", str(args.epochs), *(["--limit", str(args.limit)] if args.limit else []),
                *(["--gpu", args.gpu] if args.gpu is not None else []), *(["--threads", str(threads)] if threads else []),
                *(["--gpu-memory", str(args.gpu_memory)] if args.gpu_memory else []),
            ], cwd=Path(__file__).parent.parent)
            for r in reports
        ]
        failed = [p.args for p in procs if p.wait() != 0]
        if failed:
            raise RuntimeError(f"{len(failed)} of {k} packed workers failed")
        done = [json.loads(r.read_text()) for r in reports]
    span = max(d["end"] for d in done) - min(d["start"] for d in done)
    return {
        "processes": k, "threads_each": threads, "span_s": span, "samples": sum(d["samples"] for d in done),
        "samples_per_s": sum(d["samples"] for d in done) / span, "device": done[0]["device"],
        "val_accuracy": [d["val_accuracy"] for d in done], "train_seconds": [d["train_seconds"] for d in done],
    }


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(prog="python -m bench.pack", description=__doc__.splitlines()[0])
    parser.add_argument("--procs", default="1,2", help="process counts to compare, e.g. 1,2,4,8")
    parser.add_argument("--family", default="dense")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--limit", type=int, default=None, help="train on a sample of the list (smoke tests)")
    parser.add_argument("--gpu", default=None, help="the GPU every process shares (CUDA index)")
    parser.add_argument("--gpu-memory", type=int, default=None, help="MB per process instead of memory growth")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads per process (default: the cores split between them without a GPU)")
    parser.add_argument("--out", default=str(RESULTS / "pack.json"))
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--report", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args)
        return []
    from rich.console import Console
    from rich.table import Table

    rows = [run_packed(int(k), args) for k in args.procs.split(",")]
    table = Table(title=f"{args.family}, {args.epochs} epochs per process, on {rows[0]['device']}")
    for col in ("processes", "threads each", "span s", "samples/s (all)", f"x {rows[0]['processes']} process(es)", "val acc"):
        table.add_column(col, justify="right")
    for r in rows:
        r["speedup_vs_first"] = r["samples_per_s"] / rows[0]["samples_per_s"]
        accs = ", ".join(f"{a:.3f}" for a in r["val_accuracy"])
        table.add_row(str(r["processes"]), str(r["threads_each"] or "all"), f"{r['span_s']:.1f}", f"{r['samples_per_s']:,.0f}",
                      f"{r['speedup_vs_first']:.2f}", accs)
    Console(width=150).print(table)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"args": vars(args), "rows": rows}, indent=1))
    return rows


if __name__ == "__main__":
    main()
