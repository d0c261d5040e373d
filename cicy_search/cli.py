"""The ``cicy-search`` command: parse, call one library function, print.

Errors a user can cause are ``CicyError``: one line on stderr and exit code 2.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from .errors import CicyError

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

app = typer.Typer(help="Hyperparameter search and experiment tracking for CICY Hodge numbers.", no_args_is_help=True)
data_app = typer.Typer(help="The embedded CICY 3-fold lists.", no_args_is_help=True)
app.add_typer(data_app, name="data")
console = Console()
err = Console(stderr=True)


@data_app.command("info")
def data_info(
    dataset: str = typer.Option("original", help="original or favourable"),
    keep_products: bool = typer.Option(False, help="keep the product manifolds (h11 = 0)"),
):
    """Counts, Hodge number ranges and matrix sizes of an embedded list."""
    from . import data

    s = data.summary(data.load(dataset, keep_products=keep_products))
    table = Table(title=f"CICY 3-folds: {dataset} list", show_header=False)
    for k, v in s.items():
        table.add_row(k, " .. ".join(map(str, v)) if isinstance(v, tuple) and k != "padding" else str(v))
    console.print(table)


@app.command()
def train(
    config: Optional[str] = typer.Argument(None, help="run config YAML, or a shipped example: " "dense, dense_l1l2, dense_dropout, cnn, inception, svm"),
    epochs: Optional[int] = typer.Option(None, help="override train.epochs"),
    seed: Optional[int] = typer.Option(None, help="override the training seed"),
    tracking_uri: Optional[str] = typer.Option(None, help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI or mlruns/)"),
    experiment: str = typer.Option("cicy-search-train", help="MLflow experiment"),
):
    """Train one model (default: the seed talk's dense network on h11) and log it as one MLflow run."""
    from .config import load_config, resolve

    cfg = load_config(config)
    if epochs is not None:
        cfg["train"]["epochs"] = epochs
    if seed is not None:
        cfg["seed"] = seed
    cfg = resolve(cfg)
    from . import tracking

    client = tracking.client(tracking_uri)
    from .runner import run_tracked

    console.print(f"training [bold]{cfg['name']}[/] ({cfg['model']['family']}) -> {client.tracking_uri}")
    tracked = run_tracked(cfg, mlflow_client=client, experiment=experiment, progress=True)
    m = tracked.result.metrics
    console.print(
        f"run {tracked.run_id}: train {m['train_accuracy']:.4f}  val {m['val_accuracy']:.4f}  "
        f"test {m.get('test_accuracy', float('nan')):.4f}  ({tracked.result.n_params:,} params, {tracked.result.seconds:.1f} s)"
    )


def main(args: list[str] | None = None) -> None:
    """Entry point; ``args`` defaults to ``sys.argv[1:]``. Always ends with ``sys.exit``."""
    try:
        app(args=args, standalone_mode=False)
        sys.exit(0)
    except CicyError as e:
        err.print(f"[red]error:[/] {e}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except Exception as e:  # click usage errors arrive here in non-standalone mode
        import click

        if isinstance(e, click.exceptions.ClickException):
            e.show()
            sys.exit(2)
        if isinstance(e, click.exceptions.Abort):
            sys.exit(130)
        raise


if __name__ == "__main__":
    main()
