"""What a journal file's heartbeat (``storage.HeartbeatJournalStorage``) costs a worker, at a study's size.

    .venv/bin/python -m bench.heartbeat [--trials 10000] [--repeat 50]

A journal study is filled with ``--trials`` complete trials (copies of one with 5 params and a 1.5 kB config, as
a study trial leaves), one more left RUNNING; then the median CPU time (this thread) over ``--repeat`` calls of:
``fail_stale_trials`` (what Optuna's ``optimize`` runs at every trial's start on a storage with a heartbeat),
``record_heartbeat`` (one beat, every ``CICY_HEARTBEAT_INTERVAL`` seconds of a trial) and, for scale, a read of
every trial (``get_all_trials``). Writes ``bench/results/heartbeat.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
import warnings
from pathlib import Path


def cpu_ms(fn, repeat: int) -> float:
    """Median CPU milliseconds of this thread over ``repeat`` calls of ``fn``."""
    spent = []
    for _ in range(repeat):
        start = time.thread_time()
        fn()
        spent.append((time.thread_time() - start) * 1000)
    return round(statistics.median(spent), 3)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m bench.heartbeat", description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=50)
    parser.add_argument("--out", type=Path, default=Path("bench/results/heartbeat.json"))
    args = parser.parse_args(argv)
    import optuna

    from cicy_search.search import storage as storages

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    with tempfile.TemporaryDirectory(prefix="bench-heartbeat-") as folder, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # heartbeat outside optimize, experimental features: wanted here
        storage = storages.open_storage(f"journal:{Path(folder) / 'optuna.log'}")
        study = optuna.create_study(study_name="heartbeat", storage=storage)
        first = study.ask()
        for i in range(5):
            first.suggest_float(f"p{i}", 0, 1)
        first.set_user_attr("config", {"model": "x" * 1500})
        study.tell(first, 0.5)
        study.add_trials([study.trials[0]] * (args.trials - 1))
        running = study.ask()
        study_id = storage.get_study_id_from_name("heartbeat")
        running_id = storage.get_trial_id_from_study_id_trial_number(study_id, running.number)
        result = {
            "trials": len(study.get_trials(deepcopy=False)) - 1,
            "repeat": args.repeat,
            "fail_stale_trials_ms": cpu_ms(lambda: optuna.storages.fail_stale_trials(study), args.repeat),
            "record_heartbeat_ms": cpu_ms(lambda: storage.record_heartbeat(running_id), args.repeat),
            "get_all_trials_ms": cpu_ms(lambda: storage.get_all_trials(study_id, deepcopy=False), args.repeat),
        }
        assert study.trials[-1].state == optuna.trial.TrialState.RUNNING  # it beat: nothing was taken for lost
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"{result['trials']} complete trials: fail_stale_trials {result['fail_stale_trials_ms']} ms CPU (each trial's start), "
          f"record_heartbeat {result['record_heartbeat_ms']} ms (each beat), get_all_trials {result['get_all_trials_ms']} ms")
    return result


if __name__ == "__main__":
    main()
