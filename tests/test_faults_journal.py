"""A journal file cut in the middle of its last line (a writer killed mid-write, a full disk) stays readable: the
torn record is dropped with one warning, the next append starts on a new line, and the file stays one that
Optuna's own reader takes. Other damage is one line naming the file."""

import json
import logging
import shutil

import optuna
import pytest
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend

from cicy_search.errors import CicyError
from cicy_search.search import storage as storages
from cicy_search.search.journal import TornTailJournalFileBackend, is_torn

from .conftest import run_cli

optuna.logging.set_verbosity(optuna.logging.WARNING)


def _objective(trial):
    return trial.suggest_float("x", 0, 10) ** 2


def _journal(tmp_path, trials=4):
    path = tmp_path / "optuna.log"
    study = optuna.create_study(study_name="s", storage=storages.open_storage(f"journal:{path}"))
    study.optimize(_objective, n_trials=trials)
    return path


def _optunas_own(path):
    """What Optuna's own journal reader makes of a file (a copy: reading never changes it, but be sure)."""
    copy = path.with_name("copy-" + path.name)
    shutil.copyfile(path, copy)
    return optuna.load_study(study_name="s", storage=JournalStorage(JournalFileBackend(str(copy)))).trials


def _cuts(path):
    """Byte lengths to cut the journal to: inside its last record, from its first byte to just before its newline."""
    data = path.read_bytes()
    start = data.rstrip(b"\n").rfind(b"\n") + 1
    record = len(data) - 1 - start
    return [start + k for k in sorted({1, 2, record // 3, record // 2, record - 1, record})]


def _torn_warnings(caplog):
    return [r for r in caplog.records if "dropped a torn record" in r.getMessage()]


@pytest.mark.parametrize("which", range(6))
def test_a_journal_cut_mid_line_is_read_and_appended_after_it(tmp_path, caplog, which):
    path = _journal(tmp_path)
    cut = _cuts(path)[which]
    whole = path.read_bytes()
    path.write_bytes(whole[:cut])
    expected = _optunas_own(path)  # Optuna itself skips a torn last line when it reads
    caplog.set_level(logging.WARNING)
    study = optuna.load_study(study_name="s", storage=storages.open_storage(f"journal:{path}"))
    assert [(t.number, t.state, t.params) for t in study.trials] == [(t.number, t.state, t.params) for t in expected]
    study.optimize(_objective, n_trials=2)
    assert len(_torn_warnings(caplog)) == 1
    lines = path.read_bytes().split(b"\n")
    assert lines[-1] == b"" and all(json.loads(line) for line in lines[:-1])  # every line a whole record again
    assert path.read_bytes().startswith(whole[: whole.rstrip(b"\n").rfind(b"\n") + 1])  # nothing before it touched
    after = _optunas_own(path)  # and Optuna's own reader takes the file
    assert len(after) == len(expected) + 2
    assert [t.state for t in after[-2:]] == [optuna.trial.TrialState.COMPLETE] * 2
    fresh = optuna.load_study(study_name="s", storage=storages.open_storage(f"journal:{path}"))
    assert [(t.number, t.state, t.value) for t in fresh.trials] == [(t.number, t.state, t.value) for t in after]


@pytest.mark.parametrize("which", [0, 2, 4])
def test_a_journal_optuna_appended_to_after_a_torn_line_is_read_again(tmp_path, caplog, which):
    """The file the issue describes: cut mid-line, then appended to straight after the torn bytes (by Optuna's own
    writer, as every append did before this module): Optuna cannot read it any more; this backend keeps the record
    appended after the torn bytes."""
    path = _journal(tmp_path)
    whole = path.read_bytes()
    before = _optunas_own(path)
    last = json.loads(whole.rstrip(b"\n").rsplit(b"\n", 1)[1])
    path.write_bytes(whole[: _cuts(path)[which]])
    JournalFileBackend(str(path)).append_logs([last])  # the last record again, written after the torn one
    plain = optuna.load_study(study_name="s", storage=JournalStorage(JournalFileBackend(str(path))))
    with pytest.raises((ValueError, json.JSONDecodeError)):  # appended; then Optuna reads past the damaged line
        plain.set_user_attr("after", 1)
    with pytest.raises((ValueError, json.JSONDecodeError)):
        list(JournalFileBackend(str(path)).read_logs(0))
    caplog.set_level(logging.WARNING)
    study = optuna.load_study(study_name="s", storage=storages.open_storage(f"journal:{path}"))
    assert len(_torn_warnings(caplog)) == 1
    assert [(t.number, t.state, t.value) for t in study.trials] == [(t.number, t.state, t.value) for t in before]
    assert study.user_attrs == {"after": 1}


@pytest.mark.parametrize(
    "damage",
    [
        lambda data, at: data[:at] + b"garbage" + data[at + 7 :],  # bytes overwritten inside a record
        lambda data, at: data[:at] + b"\xff\xfe" + data[at + 2 :],  # bytes that are not UTF-8
        lambda data, at: data[:at] + b"\n" + data[at:],  # a record split in two by a stray newline
    ],
)
def test_other_damage_is_one_line_naming_the_file(tmp_path, capsys, damage):
    path = _journal(tmp_path)
    data = path.read_bytes()
    at = data.find(b"\n") + 20  # inside the second record, not the last
    path.write_bytes(damage(data, at))
    with pytest.raises(CicyError, match=f"^Optuna journal {path}: the line at byte \\d+ is damaged"):
        optuna.load_study(study_name="s", storage=storages.open_storage(f"journal:{path}"))
    assert run_cli("study", "status", "s", "--storage", f"journal:{path}") == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: Optuna journal {path}: the line at byte ") and "\n" not in err, err


@pytest.mark.parametrize(
    "line, torn",
    [
        (b'{"op_code":1,"worker_id":"ab', True),
        (b'{"op_code":1,', True),
        (b'{"op_code"', True),
        (b"{", True),
        (b"", True),
        (b'{"op_code":1}', False),
        (b'{"op_code":1}}', False),
        (b'{"op_code":garbage,"x":1}', False),
        (b"xyz", False),
        (b'{"a":"\xff', False),
    ],
)
def test_what_counts_as_a_torn_record(line, torn):
    assert is_torn(line) is torn


def test_the_backend_is_a_public_optuna_journal_backend(tmp_path):
    backend = TornTailJournalFileBackend(str(tmp_path / "j.log"))
    assert isinstance(backend, JournalFileBackend)
    backend.append_logs([{"op_code": 0, "a": 1}, {"op_code": 0, "a": 2}])
    assert list(backend.read_logs(0)) == [{"op_code": 0, "a": 1}, {"op_code": 0, "a": 2}]
    assert list(backend.read_logs(1)) == [{"op_code": 0, "a": 2}]
    assert list(backend.read_logs(2)) == []
