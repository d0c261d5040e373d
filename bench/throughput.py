"""Samples per second of the dense, CNN, inception and SVM models: the project's loop against ``model.fit``.

Every loop trains the same config from the same seed in the same process, so their ratios hold even on a
busy machine; the achieved FLOP rate is set against a matrix-multiply probe run alongside. Inception costs
about half a minute per epoch on two CPU cores, so it is timed over a few dozen steps and scaled up to the
full split (its cost is arithmetic, which grows with the samples); the table marks those rows.

    python -m bench.throughput [--families dense,cnn] [--epochs 20] [--inception-steps 24]
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

from cicy_search.config import resolve
from cicy_search.training import prepare

from . import flops
from .measure import gpu_present, loops, time_epochs, time_svm, with_train
from .probe import matmul_gflops

RESULTS = Path(__file__).parent / "results"
FAMILIES = ("dense", "cnn", "inception", "svm")


def family_config(family: str, limit: int | None = None) -> dict:
    """The family's default config on the full original list (h11), as ``{"model": {"family": ...}}`` gives it."""
    return resolve({"model": {"family": family}, "data": {"limit": limit}})


def measure_family(family: str, prepared, *, epochs: int, steps: int | None, gpu: bool, repeats: int, limit: int | None = None) -> list[dict]:
    """Time every loop on ``family``'s default config; loops alternate ``repeats`` times and keep their best.

    Alternating exposes every loop to the same drift in the machine's load; the best of several runs is
    the least disturbed one.
    """
    config = family_config(family, limit)
    n_train, n_val = len(prepared.x["train"]), len(prepared.x["val"])
    if family == "svm":
        variants = {"project": config}
    else:
        variants = {name: with_train(config, **train) for name, train in loops(gpu).items()}
        if family == "dense" and not gpu:  # what "auto" weighs on a CPU: XLA's compile time against its steps
            variants["project, no XLA"] = with_train(config, jit_compile=False)
        if gpu and family == "inception":
            variants["mixed precision"] = with_train(config, mixed_precision=True, jit_compile=False)
            variants["mixed precision + XLA"] = with_train(config, mixed_precision=True, jit_compile=True)
    best: dict[str, dict] = {}
    for _ in range(repeats if family != "svm" else 1):
        for name, c in variants.items():
            r = time_svm(c, prepared) if family == "svm" else time_epochs(c, prepared, epochs=epochs, steps=steps)
            if name not in best or r["epoch_s"] < best[name]["epoch_s"]:
                best[name] = r
    rows = []
    for name, r in best.items():
        model = r.pop("model")
        row = {"family": family, "loop": name, **r}
        if family != "svm":
            row["params"] = model.count_params()
            row["gflop_per_epoch"] = flops.per_epoch(model, n_train, n_val) / 1e9
            row["gflop_per_s"] = row["gflop_per_epoch"] / r["epoch_s"]
        rows.append(row)
    plain = best.get("plain fit")
    for r in rows:
        r["speedup_vs_plain"] = plain["epoch_s"] / r["epoch_s"] if plain else None
    return rows


def _cell(value, fmt: str, star: str = "") -> str:
    return "-" if value is None else format(value, fmt) + star


def table(rows: list[dict], probe: dict, n_train: int):
    from rich.table import Table

    t = Table(title=f"seconds per epoch ({n_train:,} training samples, batch 32); matmul probe {probe['peak_gflop_per_s']:.0f} GFLOP/s "
              f"(1024^2), {probe['batch_gflop_per_s']:.0f} GFLOP/s (32x128 @ 128x128)")
    for col in ("family", "loop", "XLA", "s/epoch", "1st epoch s", "samples/s", "GFLOP/epoch", "GFLOP/s", "% probe", "x plain", "val acc"):
        t.add_column(col, justify="left" if col in ("family", "loop") else "right")
    for r in rows:
        star = "*" if r["extrapolated"] else ""
        percent = None if r.get("fraction_of_probe") is None else 100 * r["fraction_of_probe"]
        t.add_row(
            r["family"], r["loop"], {True: "yes", False: "no"}.get(r.get("xla"), "-"),
            _cell(r["epoch_s"], ".3f", star), _cell(r["first_epoch_s"], ".2f", star), _cell(r["samples_per_s"], ",.0f"),
            _cell(r.get("gflop_per_epoch"), ".1f"), _cell(r.get("gflop_per_s"), ".1f"), _cell(percent, ".0f"),
            _cell(r["speedup_vs_plain"], ".1f"), _cell(None if r["extrapolated"] else r["val_accuracy"], ".3f"),
        )
    return t


def probe(seconds: float = 1.0) -> dict:
    return {"peak_gflop_per_s": matmul_gflops(seconds=seconds), "batch_gflop_per_s": matmul_gflops(32, 128, seconds=seconds)}


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(prog="python -m bench.throughput", description=__doc__.splitlines()[0])
    parser.add_argument("--families", default=",".join(FAMILIES))
    parser.add_argument("--epochs", type=int, default=20, help="epochs of dense (the default run's 20: XLA's compile time counts)")
    parser.add_argument("--conv-epochs", type=int, default=3, help="epochs of the CNN and of inception's slice")
    parser.add_argument("--inception-steps", type=int, default=24, help="inception: training steps per timed epoch")
    parser.add_argument("--repeats", type=int, default=2, help="alternate the loops this many times, keep each one's best")
    parser.add_argument("--probe-seconds", type=float, default=1.0, help="how long each matmul probe runs")
    parser.add_argument("--limit", type=int, default=None, help="a sample of the list instead of all of it (smoke tests)")
    parser.add_argument("--out", default=str(RESULTS / "throughput.json"))
    args = parser.parse_args(argv)
    from rich.console import Console

    console = Console()
    if not console.is_terminal:
        console = Console(width=150)
    gpu = gpu_present()
    prepared = prepare(family_config("dense", args.limit))  # every family's default data section is the same
    before = probe(args.probe_seconds)
    rows = []
    for family in args.families.split(","):
        console.print(f"[dim]measuring {family} ...[/]")
        epochs = args.epochs if family == "dense" else args.conv_epochs
        steps = args.inception_steps if family == "inception" else None
        rows += measure_family(family, prepared, epochs=epochs, steps=steps, gpu=gpu, repeats=args.repeats, limit=args.limit)
    after = probe(args.probe_seconds)
    # The probe before and after the runs: how much the machine's speed moved meanwhile.
    probes = {k: (before[k] + after[k]) / 2 for k in before} | {"before": before, "after": after}
    for r in rows:
        if r.get("gflop_per_s") is not None:
            r["fraction_of_probe"] = r["gflop_per_s"] / probes["peak_gflop_per_s"]
    console.print(table(rows, probes, len(prepared.x["train"])))
    console.print("* timed over a slice of the epoch and scaled to the full split. "
                  "FLOP: analytic from layer shapes, training step = 3x forward (bench/flops.py).")
    out = {"machine": machine(gpu), "probe": probes, "rows": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1))
    console.print(f"written to {args.out}")
    return rows


def machine(gpu: bool) -> dict:
    import os

    import keras
    import tensorflow as tf

    return {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(), "gpu": gpu,
            "tensorflow": tf.__version__, "keras": keras.__version__, "load_average": os.getloadavg()}


if __name__ == "__main__":
    main()
