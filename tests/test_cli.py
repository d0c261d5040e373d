"""The CLI edge: every mistake is one ``error:`` line on stderr, exit code 2, and nothing created anywhere.

Signals (Ctrl-C, SIGTERM) on a running study are tested in ``test_search_study.py``, which owns the trial loop.
"""

import pytest
import yaml

from .conftest import run_cli

TINY = {
    "study": "cli-checks",
    "base": "dense",
    "data": {"limit": 400},
    "train": {"epochs": 1},
    "space": {"model.depth": {"type": "int", "low": 1, "high": 2}},
    "sampler": {"name": "random", "seed": 0},
    "budget": {"n_trials": 2},
}


def _one_error_line(capsys, *words):
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


def _nothing_created(tmp_path, *inputs):
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == sorted(inputs), names  # no mlruns/ home, no storage, no MLflow store


@pytest.mark.parametrize(
    "args, words",
    [
        (["predict"], ["Missing argument 'model'", "cicy-search predict --help"]),
        (["predict", "models/x"], ["Missing argument 'input'"]),
        (["frobnicate"], ["No such command 'frobnicate'"]),
        (["train", "--bogus"], ["No such option: --bogus"]),
        (["train", "--seed", "abc"], ["Invalid value for '--seed'"]),
        (["train", "--epochs", "1.5"], ["Invalid value for '--epochs'"]),
        (["study", "run", "s.yaml", "--n-trials", "ten"], ["Invalid value for '--n-trials'"]),
        (["study", "run", "s.yaml", "--timeout", "soon"], ["Invalid value for '--timeout'"]),
        (["study", "create"], ["Missing argument"]),
        (["worker", "s.yaml", "--threads", "two"], ["Invalid value for '--threads'"]),
        (["data", "info", "--dataset"], ["requires an argument"]),
    ],
)
def test_usage_errors_are_one_line_exit_2(tmp_path, monkeypatch, capsys, args, words):
    monkeypatch.chdir(tmp_path)
    assert run_cli(*args) == 2
    _one_error_line(capsys, *words)
    _nothing_created(tmp_path)


def _study_file(tmp_path, **changes):
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({**TINY, **changes}))
    return path


@pytest.mark.parametrize(
    "args, words",
    [
        (["study", "run", "{file}", "--n-trials", "0"], ["--n-trials: expected an integer from 1 to 1,000,000, got 0"]),
        (["study", "run", "{file}", "--n-trials", "-1"], ["--n-trials: expected an integer from 1 to 1,000,000, got -1"]),
        (["study", "run", "{file}", "--timeout", "-1"], ["--timeout: expected seconds > 0 (or none), got -1.0"]),
        (["study", "run", "{file}", "--timeout", "0"], ["--timeout: expected seconds > 0"]),
        (["study", "create", "{file}", "--n-trials", "0"], ["--n-trials: expected an integer from 1"]),
        (["worker", "{file}", "--n-trials", "-3"], ["--n-trials: expected an integer from 1"]),
        (["worker", "{file}", "--timeout", "-1"], ["--timeout: expected seconds > 0"]),
        (["study", "tune", "{file}", "--max-trials", "0"], ["--max-trials: expected an integer from 1"]),
    ],
)
def test_budget_flags_that_mean_nothing_are_refused_before_anything_is_created(tmp_path, monkeypatch, capsys, args, words):
    monkeypatch.chdir(tmp_path)
    path = _study_file(tmp_path)
    storage = f"sqlite:///{tmp_path / 'o.db'}"
    extra = [] if args[1] == "tune" else ["--storage", storage]
    args = [a.replace("{file}", str(path)) for a in args]
    assert run_cli(*args, *extra, "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}") == 2
    _one_error_line(capsys, *words)
    _nothing_created(tmp_path, "s.yaml")


@pytest.mark.parametrize(
    "storage, words",
    [
        ("foo", ["storage 'foo': expected a database URL"]),
        ("sqlite:///{tmp}/missing/o.db", ["folder", "missing does not exist"]),
        ("journal:{tmp}/missing/o.log", ["folder", "missing does not exist"]),
        ("sqlite:///{tmp}", ["is a folder"]),
    ],
)
def test_a_wrong_storage_leaves_no_mlflow_store_behind(tmp_path, monkeypatch, capsys, storage, words):
    monkeypatch.chdir(tmp_path)
    path = _study_file(tmp_path)
    storage = storage.replace("{tmp}", str(tmp_path))
    assert run_cli("study", "run", str(path), "--storage", storage, "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}") == 2
    _one_error_line(capsys, *words)
    _nothing_created(tmp_path, "s.yaml")


@pytest.mark.parametrize(
    "experiment, words",
    [
        ("", ["MLflow experiment name '': expected 1 to 500 printable characters"]),
        ("x" * 600, ["MLflow experiment name 'xxx", "expected 1 to 500 printable characters"]),
        ("two\nlines", ["expected 1 to 500 printable characters"]),
    ],
)
def test_experiment_names_mlflow_refuses_fail_before_the_store_is_opened(tmp_path, monkeypatch, capsys, experiment, words):
    monkeypatch.chdir(tmp_path)
    assert run_cli("train", "--experiment", experiment, "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}") == 2
    _one_error_line(capsys, *words)
    _nothing_created(tmp_path)


@pytest.mark.parametrize(
    "config, words",
    [
        ({"data": {"limit": 5}}, ["data: the validation split is empty (data.limit = 5"]),
        ({"model": {"depth": 10**8}}, ["model.depth: expected an integer from 1 to 64"]),
        ({"train": {"epochs": 10**21}}, ["train.epochs: expected an integer from 1 to 100,000"]),
        ({"name": "[/]", "data": {"limit": 3}}, ["the validation split is empty"]),  # markup in a name is text
    ],
)
def test_train_mistakes_create_no_mlflow_store(tmp_path, monkeypatch, capsys, config, words):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(config))
    assert run_cli("train", "run.yaml", "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}") == 2
    _one_error_line(capsys, *words)
    _nothing_created(tmp_path, "run.yaml")


@pytest.mark.parametrize(
    "content, words",
    [
        (b"study: a\nstudy: b\n", ["s.yaml: not valid YAML at line 2: duplicate key 'study'"]),
        (b"study: caf\xe9\n", ["s.yaml: not UTF-8 text (byte 0xe9 at offset 10)"]),
        (b"study: '[/]'\nbase: dense\ndata: {limit: 5}\n", ["s.yaml: fixed settings: data: the validation split is empty"]),
        (b"study: s\nbase: dense\nsampler: {name: tpe, n_startup_trials: ten}\n", ["s.yaml: sampler.n_startup_trials"]),
    ],
)
def test_study_file_mistakes_name_the_file_once(tmp_path, monkeypatch, capsys, content, words):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "s.yaml").write_bytes(content)
    assert run_cli("study", "run", "s.yaml", "--storage", f"sqlite:///{tmp_path / 'o.db'}") == 2
    line = _one_error_line(capsys, *words)
    assert line.count("s.yaml") == 1
    _nothing_created(tmp_path, "s.yaml")


def test_a_folder_given_as_a_file_is_not_called_missing(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "configs").mkdir()
    assert run_cli("train", "configs") == 2
    _one_error_line(capsys, "configs: is a folder, expected a file")
    assert run_cli("study", "run", "configs") == 2
    _one_error_line(capsys, "configs: is a folder, expected a file")


def test_main_leaves_the_callers_sigterm_handler_as_it_was(tmp_path, monkeypatch, capsys):
    import signal

    monkeypatch.chdir(tmp_path)
    before = signal.getsignal(signal.SIGTERM)
    assert run_cli("frobnicate") == 2
    capsys.readouterr()
    assert signal.getsignal(signal.SIGTERM) is before
