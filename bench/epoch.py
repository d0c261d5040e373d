"""Seconds per epoch of the default dense and inception networks with the project's training loop.

Dense (config ``{}``: Flatten 180 -> 3 x Dense 128 -> 19 softmax, 58,643 parameters) runs whole epochs;
inception (``{"model": {"family": "inception"}}``, 234,849 parameters) costs about half a minute per epoch
on two CPU cores, so it is timed over ``--inception-steps`` batches per epoch and scaled up to the
full split, which the table marks. FLOP per epoch are counted analytically from the layer shapes
(training step = 3x forward) and checked against TensorFlow's profiler on the forward pass.

    python -m bench.epoch [--epochs 20] [--inception-epochs 3] [--inception-steps 32]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from cicy_search.config import resolve
from cicy_search.training import prepare

from . import flops
from .measure import time_epochs
from .probe import matmul_gflops
from .throughput import RESULTS, machine

MODELS = {"dense": {}, "inception": {"model": {"family": "inception"}}}


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(prog="python -m bench.epoch", description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20, help="dense epochs (the first one includes compiling)")
    parser.add_argument("--inception-epochs", type=int, default=3)
    parser.add_argument("--inception-steps", type=int, default=32, help="inception: training steps per timed epoch")
    parser.add_argument("--out", default=str(RESULTS / "epoch.json"))
    args = parser.parse_args(argv)
    from rich.console import Console
    from rich.table import Table

    console = Console() if Console().is_terminal else Console(width=150)
    peak = matmul_gflops()
    rows = []
    for name, given in MODELS.items():
        config = resolve(given)
        prepared = prepare(config)
        console.print(f"[dim]measuring {name} ...[/]")
        inception = name == "inception"
        r = time_epochs(config, prepared, epochs=args.inception_epochs if inception else args.epochs,
                        steps=args.inception_steps if inception else None)
        model = r.pop("model")
        n_train, n_val = len(prepared.x["train"]), len(prepared.x["val"])
        rows.append({
            "model": name, "params": model.count_params(), "n_train": n_train, "batch_size": config["train"]["batch_size"], **r,
            "forward_flop_per_sample": flops.forward(model),
            "profiler_forward_flop_per_sample": flops.profiled_forward(model, prepared.shape),
            "gflop_per_epoch": flops.per_epoch(model, n_train, n_val) / 1e9,
        })
        rows[-1]["gflop_per_s"] = rows[-1]["gflop_per_epoch"] / r["epoch_s"]
    table = Table(title=f"default networks, project loop, batch 32 (matmul probe {peak:.0f} GFLOP/s)")
    for col in ("model", "params", "s/epoch", "1st epoch s", "samples/s", "fwd FLOP/sample (profiler)", "GFLOP/epoch", "GFLOP/s", "XLA"):
        table.add_column(col, justify="left" if col == "model" else "right")
    for r in rows:
        star = "*" if r["extrapolated"] else ""
        table.add_row(
            r["model"], f"{r['params']:,}", f"{r['epoch_s']:.3f}{star}", f"{r['first_epoch_s']:.2f}{star}", f"{r['samples_per_s']:,.0f}",
            f"{r['forward_flop_per_sample']:,} ({r['profiler_forward_flop_per_sample']:,})", f"{r['gflop_per_epoch']:.1f}",
            f"{r['gflop_per_s']:.1f}", "yes" if r["xla"] else "no",
        )
    console.print(table)
    console.print(f"* inception: timed over {args.inception_steps} steps per epoch ({rows[-1]['measured_samples']} samples), "
                  "scaled to the full split; first epoch includes tracing and compiling.")
    out = {"machine": machine(False), "matmul_probe_gflop_per_s": peak, "rows": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1))
    console.print(f"written to {args.out}")
    return rows


if __name__ == "__main__":
    main()
