"""bench/ runs end to end on a slice (no timing assertions: timings are what bench/ reports, not tests)."""

import json
import time
from pathlib import Path

import keras
import pytest

from bench import flops, pack, throughput
from cicy_search.config import load_file, resolve
from cicy_search.models import Target, build

H11 = [Target("h11", 1, 19)]

ROOT = Path(__file__).resolve().parents[1]


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


@pytest.mark.slow
def test_throughput_compares_the_loops_in_one_run(tmp_path):
    out = tmp_path / "throughput.json"
    rows = throughput.main(["--families", "dense,svm", "--limit", "200", "--epochs", "2", "--repeats", "1", "--probe-seconds", "0.05", "--out", str(out)])
    assert {(r["family"], r["loop"]) for r in rows} >= {
        ("dense", "project"), ("dense", "fit, 32 steps/call"), ("dense", "plain fit"), ("svm", "project")
    }
    saved = json.loads(out.read_text())
    assert saved["probe"]["peak_gflop_per_s"] > 0 and len(saved["rows"]) == len(rows)
    dense = [r for r in saved["rows"] if r["family"] == "dense"]
    assert all(r["samples_per_s"] > 0 and r["gflop_per_s"] > 0 and r["speedup_vs_plain"] > 0 for r in dense)
    assert keras.config.dtype_policy().name == "float32"


@pytest.mark.slow
def test_pack_runs_workers_side_by_side(tmp_path):
    out = tmp_path / "pack.json"
    rows = pack.main(["--procs", "2", "--limit", "150", "--epochs", "1", "--out", str(out)])
    assert rows[0]["processes"] == 2 and len(rows[0]["val_accuracy"]) == 2 and rows[0]["samples_per_s"] > 0
    assert rows[0]["threads_each"] >= 1 and json.loads(out.read_text())["rows"][0]["device"].startswith(("cpu", "gpu"))


@pytest.fixture(scope="module")
def scale_pool(tmp_path_factory):
    """One simulated worker process for the module's jobs, as bench.scale keeps its pool: imports paid once."""
    from bench import scale

    pool = scale.Pool(1, tmp_path_factory.mktemp("pool"))
    yield pool
    pool.close()


@pytest.mark.xdist_group("bench_scale_pool")  # one worker process for both storages
@pytest.mark.parametrize("kind", ["sqlite", "journal"])
def test_a_simulated_worker_runs_the_search_and_tracking_path_without_tensorflow(tmp_path, tracking_uri, mlflow_client, scale_pool, kind):
    """bench.scale's worker process: the real budget loop, storage (a database, or a journal file: ``--storage
    journal``), pruner and MLflow runs, a sleep for training; ``prefill`` grows the study with copies of its trials."""
    import subprocess
    import sys

    import optuna
    import yaml

    from bench import scale
    from cicy_search.search.storage import open_storage

    # The modules a cluster worker runs before training, imported alone, bring no TensorFlow or Keras.
    path = "cicy_search.search.worker, cicy_search.search.study, cicy_search.search.storage, cicy_search.tracking.summary, cicy_search.tracking, cicy_search.search.studyfile"
    check = f"import sys, {path}; print(sorted(m for m in ('tensorflow', 'keras') if m in sys.modules))"
    if kind == "sqlite":  # one fresh interpreter is enough: the imports do not depend on the storage
        assert subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, check=True).stdout.strip() == "[]"

    storage = f"sqlite:///{tmp_path / 'optuna.db'}" if kind == "sqlite" else f"journal:{tmp_path / 'optuna.log'}"
    assert scale.journal_path(storage) == (None if kind == "sqlite" else tmp_path / "optuna.log")
    study = scale.Bench(None, tracking_uri, None, None, storage).create("simulated", budget=4)
    job = {"study": "simulated", "storage": storage, "tracking_uri": tracking_uri, "seconds": 0.2, "epochs": 4}
    [answer] = scale_pool.run(job, 1)
    assert not scale_pool.tensorflow and not answer["tensorflow"] and answer["error"] is None and answer["tracking_errors"] == []
    assert answer["ran"] == 4 and [r["number"] for r in answer["records"]] == [0, 1, 2, 3]
    for r in answer["records"]:
        assert r["slept_s"] <= 0.2 + 1e-9 and r["overhead_ms"] > 0 and r["storage_trial_calls"] > 0 and r["tracking_bg_calls"] >= 1
        assert r["upload_wait_trial_calls"] == 2 and 0 <= r["upload_wait_trial_ms"] < r["overhead_ms"]  # the previous writes, the link
    # The uploader's writes land in whichever trial's window is open when they run, so count them over the job.
    # At least: each trial's run made, its one batch (params, metrics, end tags) and its end; the study's summary.
    assert sum(r["tracking_bg_calls"] for r in answer["records"]) >= 3 * len(answer["records"]) + 1
    trials = optuna.load_study(study_name="simulated", storage=open_storage(storage)).get_trials(deepcopy=False)
    assert all(t.state.is_finished() for t in trials) and len(trials) == 4
    # Each trial left what a real one leaves: its MLflow run (nested, params, per-epoch metrics, artifacts) and the link.
    parent = study.user_attrs["mlflow_parent_run_id"]
    for t in trials:
        run = mlflow_client.get_run(t.user_attrs["mlflow_run_id"])
        assert run.data.tags["mlflow.parentRunId"] == parent and run.data.params["trial.number"] == str(t.number)
        assert set(t.params) <= set(run.data.params) and t.user_attrs["config"]["seed"] == t.user_attrs["seed"]
        assert {i.tags[0].value for i in run.inputs.dataset_inputs} == {"training", "validation", "test"}
        if t.state == optuna.trial.TrialState.COMPLETE:
            assert run.info.status == "FINISHED" and len(mlflow_client.get_metric_history(run.info.run_id, "epoch_val_accuracy")) == 4
            assert not mlflow_client.list_artifacts(run.info.run_id)  # the config is its description
            note = run.data.tags["mlflow.note.content"]
            assert yaml.safe_load(note.split("```yaml\n")[1].split("```")[0]) == t.user_attrs["config"]
        else:
            assert t.state == optuna.trial.TrialState.PRUNED and run.info.status == "KILLED"
    if kind == "journal":  # grown by copies of its complete trials, read back by another process's view of the file
        complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
        assert scale.prefill(None, None, study, 9) == 5 and scale.prefill(None, None, study, 9) == 0
        grown = optuna.load_study(study_name="simulated", storage=open_storage(storage)).get_trials(deepcopy=False)
        assert len(grown) == 9 and [t.number for t in grown] == list(range(9))
        assert [t.params for t in grown[4:]] == [complete[i % len(complete)].params for i in range(5)]
        assert all(t.state == optuna.trial.TrialState.COMPLETE for t in grown[4:])


def test_the_scale_bench_postgres_starts_answers_and_stops(tmp_path):
    import glob
    import os

    from bench import scale

    if not glob.glob("/usr/lib/postgresql/*/bin/postgres"):
        if os.environ.get("CI") == "true":
            pytest.fail("CI=true but no PostgreSQL server binaries: .ci/run must install postgresql")
        pytest.skip("no PostgreSQL server binaries (apt-get install postgresql)")
    pg = scale.Postgres(tmp_path, max_connections=20)
    try:
        pg.create("scale_check")
        assert pg.query("scale_check", "SHOW max_connections") == "20"
        assert pg.query("scale_check", "SELECT pg_database_size(current_database())") > 1_000_000
    finally:
        pg.stop()
    assert pg.proc.poll() is not None and not pg.folder.exists()
    with pytest.raises(Exception):
        pg.connect("postgres")


@pytest.mark.slow
@pytest.mark.parametrize("server,block", [(False, 2), (True, 1)], ids=["sqlite-store-blocks-of-2", "mlflow-server-one-at-a-time"])
def test_tracking_bench_measures_three_arms_in_rotating_order_in_one_run(tmp_path, server, block):
    """bench.tracking on a slice: blocks of plain, untracked-search and tracked trials in rounds through every order;
    the tracked ones real study trials with their MLflow runs (in a SQLite store, or through an mlflow server the
    bench starts and stops, whose CPU it counts), the untracked ones real trials with none."""
    import optuna

    from bench import tracking as bench_tracking
    from cicy_search import tracking

    from cicy_search import training

    original = training.fit
    out = tmp_path / "tracking.json"
    args = ["--epochs", "1", "--rounds", "3", "--block", str(block), "--limit", "150", "--dir", str(tmp_path), "--out", str(out)]
    result = bench_tracking.main(args + (["--server"] if server else []))
    assert json.loads(out.read_text()) == json.loads(json.dumps(result))
    assert training.fit is original  # the timed fit is put back
    rounds = result["rounds"]
    assert result["complete"] and result["n_rounds"] == 3 and result["block"] == block
    trials = 1 + 3 * block  # the first, untimed, and a block a round
    assert [r["round"] for r in rounds] == [1, 2, 3]
    assert [r["trials"] for r in rounds] == ([[1, 2], [3, 4], [5, 6]] if block == 2 else [[1, 1], [2, 2], [3, 3]])
    # Every arm comes first, second and third once over three rounds (and over all six orders): drift cancels.
    for position in range(3):
        assert sorted(r["order"][position] for r in rounds) == sorted(bench_tracking.ARMS)
        assert sorted(order[position] for order in bench_tracking.ORDERS) == [0, 0, 1, 1, 2, 2]
    assert len(set(bench_tracking.ORDERS)) == 6
    for r in rounds:
        assert min(r["plain_s"], r["search_s"], r["tracked_s"]) > 0 and r["tracked_s"] > r["writes_wait_ms"] / 1000 >= 0
        assert r["tracking_ms"] == pytest.approx(1000 * (r["tracked_s"] - r["search_s"]))
        assert r["search_ms"] == pytest.approx(1000 * (r["search_s"] - r["plain_s"]))
        assert r["overhead_ms"] == pytest.approx(r["tracking_ms"] + r["search_ms"])
        assert all(0 <= r[f"{arm}_val_accuracy"] <= 1 for arm in bench_tracking.ARMS)
        # The direct figures: time around training on the trial's thread, the uploader's CPU (every tracked trial writes).
        assert all(0 <= r[f"{arm}_outside_fit_ms"] < 1000 * r[f"{arm}_s"] for arm in bench_tracking.ARMS)
        assert r["uploader_cpu_ms"] >= r["uploader_cpu_during_ms"] >= 0 and r["uploader_cpu_ms"] > 0
        assert r["direct_tracking_ms"] == pytest.approx(r["tracked_outside_fit_ms"] - r["search_outside_fit_ms"] + r["uploader_cpu_during_ms"])
        assert r["direct_search_ms"] == pytest.approx(r["search_outside_fit_ms"] - r["plain_outside_fit_ms"])
        assert r["server_cpu_ms"] > 0 if server else r["server_cpu_ms"] == 0  # every tracked trial's requests cost the server
    assert result["tracking"] == ("mlflow server (SQLite backend)" if server else "SQLite store")
    for name in bench_tracking.DIFFERENCES:
        low, high = result[f"{name}_ci95_ms"]
        assert low <= result[f"median_{name}_ms"] <= high
        assert result[f"{name}_share"] == pytest.approx(result[f"median_{name}_ms"] / 1000 / result["median_plain_trial_s"])
    assert set(result["one_off_s"]) == {"study_create_s", "prepare_s", "first_fit_s", "first_search_trial_s", "first_tracked_trial_s",
                                        "study_finish_s", "study_report_s"}
    # The untracked trials: complete, no MLflow run linked.
    search = optuna.load_study(study_name="bench-search", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    assert [t.state for t in search.trials] == [optuna.trial.TrialState.COMPLETE] * trials
    assert all("mlflow_run_id" not in t.user_attrs and "config" in t.user_attrs for t in search.trials)
    study = optuna.load_study(study_name="bench-tracking", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    client = tracking.client(f"sqlite:///{tmp_path / ('server.db' if server else 'mlflow.db')}")  # the server's store: it has stopped
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * trials
    parent = client.get_run(study.user_attrs["mlflow_parent_run_id"])
    assert parent.info.status == "FINISHED" and parent.data.tags["trials_finished"] == str(trials)  # its budget
    for t in study.trials:
        run = client.get_run(t.user_attrs["mlflow_run_id"])
        assert run.info.status == "FINISHED" and run.data.tags["mlflow.parentRunId"] == parent.info.run_id
    # Every trial's point, each written once, though the study's summary was written as a study writes it.
    assert sorted(m.step for m in client.get_metric_history(parent.info.run_id, "trial_val_accuracy")) == list(range(trials))
    low, high = bench_tracking.interval([float(v) for v in range(100)])
    assert 35 <= low < 49.5 < high <= 64  # the median's (about +-2 standard errors: 5), far narrower than the values' spread


def test_mlflow_requests_bench_times_each_request_of_a_trials_run(tmp_path):
    from bench import mlflow_requests

    from cicy_search import tracking

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    out = tmp_path / "requests.json"
    result = mlflow_requests.main(["--repeat", "2", "--tracking-uri", uri, "--out", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(result)) and result["tracking"] == "SQLite store" and result["repeat"] == 2
    costs = result["requests"]
    assert list(costs) == ["create_run", "log_inputs", "log_batch: params + first metrics", "log_batch: 77 metrics + a tag (the end)",
                           "log_batch: one tag", "set_terminated"]
    assert all(0 < c["p10_ms"] <= c["median_ms"] <= c["p90_ms"] for c in costs.values())
    # The runs are real: finished, with everything a trial's run holds.
    client = tracking.client(uri)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert len(runs) == 5 and {r.info.status for r in runs} == {"FINISHED"}
    assert all(len(r.data.params) == 45 and len(r.inputs.dataset_inputs) == 3 for r in runs)
    assert all(len(client.get_metric_history(r.info.run_id, "epoch_loss")) == 20 for r in runs)


def test_cpu_meter_counts_a_group_with_its_live_descendants_and_alone_without():
    import os
    import subprocess
    import sys

    from bench.processes import CpuMeter

    meter = CpuMeter({"alone": [os.getpid()], "family": [os.getpid()]}, alone=("alone",))
    before = meter.read()
    # A child that spins for 0.6 s of CPU, then stays alive (its CPU is read while it lives).
    code = "import sys, time\nt = time.process_time()\nwhile time.process_time() - t < 0.6: pass\nprint('done', flush=True)\nsys.stdin.read()"
    child = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline() == "done\n"
        t = time.process_time()
        while time.process_time() - t < 0.3:  # this process's own CPU
            pass
        used = meter.since(before)
    finally:
        child.stdin.close()
        child.wait(10)
    assert 0.3 - 0.02 <= used["alone"] < 0.6 + 0.3  # /proc counts CPU in ticks of 10 ms: one may be missed
    assert used["family"] - used["alone"] >= 0.6 - 0.05  # the child's CPU, counted with its parent's family only
    assert used["machine_busy"] >= used["family"] - 0.1 and used["machine_steal"] >= 0


@pytest.mark.slow
def test_time_to_accuracy_stops_each_recipe_at_its_budget_and_derives_the_speedups_from_the_curves(tmp_path):
    """bench.time_to_accuracy on a 150-manifold slice with budgets of a second: each recipe trains until its first
    epoch ends past the budget, its curve and first reaches are recorded, and the speedups follow from them."""
    from bench import time_to_accuracy as tta

    out = tmp_path / "tta.json"
    result = tta.main(["--thresholds", "0.05,0.999", "--budget-literature", "0.5", "--budget-project", "0.5", "--limit", "150", "--out", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(result)) and result["limit"] == 150 and result["split"] == tta.SPLIT
    for name, config in (("literature", "inception"), ("project", "koszul_linear")):
        r = result["recipes"][name]
        assert r["config"] == config and len(r["curve"]) == 1 and r["curve"][0][0] >= 0.5  # one epoch: already past the budget
        assert r["prepare_seconds"] >= 0 and r["prepare_cached_seconds"] >= 0
        for t in ("0.05", "0.999"):
            assert r["reached"][t] == tta.first_reach([tuple(c) for c in r["curve"]], float(t))
    assert result["speedup"] == tta.speedups(result["recipes"], [0.05, 0.999], 0.5)
    # The ratio's rules on curves made up for it: both reached, only the project (a lower bound), neither.
    recipes = {"literature": {"reached": {"0.5": {"seconds": 30.0, "epochs": 3}, "0.9": None, "0.99": None}, "prep": 4.0},
               "project": {"reached": {"0.5": {"seconds": 3.0, "epochs": 1}, "0.9": {"seconds": 5.0, "epochs": 2}, "0.99": None}, "prep": 1.0}}
    assert tta.speedups(recipes, [0.5, 0.9, 0.99], 100.0) == {"0.5": {"speedup": 10.0}, "0.9": {"speedup_at_least": 20.0}, "0.99": None}
    assert tta.speedups(recipes, [0.5, 0.9], 100.0, "prep") == {"0.5": {"speedup": 8.5}, "0.9": {"speedup_at_least": 17.3}}
    assert tta.first_reach([(1.0, 0.2), (2.0, 0.6), (3.0, 0.7)], 0.6) == {"seconds": 2.0, "epochs": 2}
    # A recipe found at 30% train and one at 80% are both timed on 80% train, split seed 0.
    for path, train in (("recipes/matrix_h11_fit_best.yaml", 0.3), ("recipes/matrix_h11_long_best.yaml", 0.8)):
        assert load_file(ROOT / path)["data"]["train"] == train
        data = tta.recipe(str(ROOT / path), 5)["data"]
        assert (data["train"], data["val"], data["test"], data["seed"], data["targets"]) == (0.8, 0.1, 0.1, 0, ["h11"])


@pytest.mark.parametrize("trials", [10, 300])
def test_heartbeat_bench_times_the_journal_heartbeats_operations_on_a_study_of_that_size(tmp_path, trials):
    from bench import heartbeat

    out = tmp_path / "heartbeat.json"
    result = heartbeat.main(["--trials", str(trials), "--repeat", "5", "--out", str(out)])
    assert json.loads(out.read_text()) == result and result["trials"] == trials and result["repeat"] == 5
    assert all(result[k] > 0 for k in ("fail_stale_trials_ms", "record_heartbeat_ms", "get_all_trials_ms"))


def test_cpuprof_matches_idle_seconds_to_the_tests_running_then(tmp_path):
    from bench import cpuprof

    tests = [
        {"id": "t.py::a", "start": 100.0, "wall": 12.0, "self": 1.0, "child": 0.0},  # 100-112
        {"id": "t.py::b", "start": 112.0, "wall": 0.5, "self": 0.4, "child": 0.0},  # too short to name
        {"id": "u.py::c", "start": 113.0, "wall": 5.0, "self": 0.1, "child": 2.0},  # 113-118
    ]
    idle = [(100.0 + s, v) for s, v in enumerate([0.0] * 10 + [1.0, 1.0, 0.2] + [0.0] * 7 + [0.5] * 5)]
    assert cpuprof.idle_windows(tests, idle) == [(10.0, 2.2, ["t.py::a", "u.py::c"]), (20.0, 2.5, [])]
    assert cpuprof.idle_windows(tests, idle, least=2.3) == [(20.0, 2.5, [])]
    # The sampler: one line a second, idle core-seconds between 0 and the cores.
    import threading

    path = tmp_path / "cpu.jsonl.idle"
    threading.Thread(target=cpuprof._sample_idle, args=(str(path), 2), daemon=True).start()
    deadline = time.monotonic() + 30  # two samples, however loaded the machine is
    while not (path.exists() and len(path.read_text().splitlines()) >= 2) and time.monotonic() < deadline:
        time.sleep(0.2)
    lines = [line.split() for line in path.read_text().splitlines()][:2]
    assert len(lines) == 2 and all(0 <= float(v) <= 2 and float(t) > 1.7e9 for t, v in lines)
    assert 0.5 < float(lines[1][0]) - float(lines[0][0]) < 10  # a second apart, give or take the load
