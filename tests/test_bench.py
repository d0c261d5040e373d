"""bench/ runs end to end on a slice (no timing assertions: timings are what bench/ reports, not tests)."""

import json

import keras

from bench import flops, pack, throughput
from cicy_search.config import resolve
from cicy_search.models import Target, build

H11 = [Target("h11", 1, 19)]


def test_flop_count_matches_the_layer_arithmetic_and_the_profiler():
    dense = build(resolve({}), (12, 15), H11)
    assert flops.forward(dense) == 2 * (180 * 128 + 128 * 128 + 128 * 128 + 128 * 19)
    assert flops.per_epoch(dense, 100, 10) == flops.forward(dense) * (3 * 100 + 10)
    inception = build(resolve({"model": {"family": "inception"}}), (12, 15), H11)
    # module 1 from one channel, modules 2 and 3 from 64 and 128, each a 12x1 and a 1x15 kernel at 180 positions
    convs = 2 * 180 * 27 * (1 * 32 + 64 * 64 + 128 * 32)
    assert flops.forward(inception) == convs + 2 * 180 * 32 * 2 * 1
    for model in (dense, inception):  # the profiler also counts biases, activations and batch norm: a little more
        assert 1.0 <= flops.profiled_forward(model, (12, 15)) / flops.forward(model) < 1.02


def test_throughput_compares_the_loops_in_one_run(tmp_path):
    out = tmp_path / "throughput.json"
    rows = throughput.main(["--families", "dense,svm", "--limit", "400", "--epochs", "2", "--repeats", "1", "--probe-seconds", "0.2", "--out", str(out)])
    assert {(r["family"], r["loop"]) for r in rows} >= {
        ("dense", "project"), ("dense", "fit, 32 steps/call"), ("dense", "plain fit"), ("svm", "project")
    }
    saved = json.loads(out.read_text())
    assert saved["probe"]["peak_gflop_per_s"] > 0 and len(saved["rows"]) == len(rows)
    dense = [r for r in saved["rows"] if r["family"] == "dense"]
    assert all(r["samples_per_s"] > 0 and r["gflop_per_s"] > 0 and r["speedup_vs_plain"] > 0 for r in dense)
    assert keras.config.dtype_policy().name == "float32"


def test_pack_runs_workers_side_by_side(tmp_path):
    out = tmp_path / "pack.json"
    rows = pack.main(["--procs", "2", "--limit", "300", "--epochs", "1", "--out", str(out)])
    assert rows[0]["processes"] == 2 and len(rows[0]["val_accuracy"]) == 2 and rows[0]["samples_per_s"] > 0
    assert rows[0]["threads_each"] >= 1 and json.loads(out.read_text())["rows"][0]["device"].startswith(("cpu", "gpu"))
