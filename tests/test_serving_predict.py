"""``cicy-search predict``: read matrices, validate each one, predict the valid ones with a real (tiny) bundle.

A model trained for a second cannot know that the quintic has h11 = 1, h21 = 101, so predictions here
are checked against what the same model gives the same manifold's row of the shipped data set: the
user's matrix must reach the network exactly as the training data did.
"""

import io
import json

import numpy as np
import pytest

from cicy_search import bundle, data
from cicy_search.errors import CicyError
from cicy_search.serving.predict import parse_matrix, predict_file, read_entries
from cicy_search.training import fit

from .conftest import run_cli, tiny

# The module-scoped fixtures here are made once: pytest-xdist runs all these tests on one worker.
pytestmark = pytest.mark.xdist_group("serving_predict")

QUINTIC = [[5]]
BICUBIC = [[3], [3]]  # P2 x P2 with two cubics: h11 = 2, h21 = 83

# (input, words its one-line error must contain)
MALFORMED = [
    ([[1, 2], [3]], "ragged rows"),
    ([[6, -1]], "negative"),
    ([[2.5, 2.5]], "not an integer"),
    ([["5"]], "not an integer"),
    ([[True, 4]], "not an integer"),
    ([[float("nan")]], "not an integer"),
    ([[1] * 16], "exceeds the padding size 12x15"),
    ([[2]] * 13, "exceeds the padding size 12x15"),
    ([[4]], "dimension is"),
    ([[3], [1]], "Calabi-Yau condition fails in row 1"),
    ([[0, 5]], "dimension is"),
    ([], "empty"),
    ([[]], "empty row"),
    ("[[5]", "not JSON"),
    (5, "empty or not a list of rows"),
    ([5, 5], "rows must be lists of integers"),
]


@pytest.mark.parametrize("value, reason", MALFORMED, ids=[r.split()[0] + str(i) for i, (_, r) in enumerate(MALFORMED)])
def test_malformed_matrices_each_get_one_line(value, reason):
    q, error = parse_matrix(value)
    assert q is None and reason in error and "\n" not in error


def test_valid_matrices_with_and_without_the_dimension_column():
    assert parse_matrix(QUINTIC) == ([[5]], None)
    assert parse_matrix("[[5]]") == ([[5]], None)
    assert parse_matrix([[4, 5]]) == ([[5]], None)  # [n | q] for the quintic
    assert parse_matrix([[2, 3], [2, 3]]) == (BICUBIC, None)
    assert parse_matrix([[5.0]]) == ([[5]], None)
    # Wrong dimension column: the error says which reading failed.
    q, error = parse_matrix([[3, 4]])
    assert q is None and "dimension" in error


def test_every_shipped_matrix_reads_the_same_with_and_without_its_dimension_column():
    """The two readings are never both valid (see parse_matrix); the whole original list confirms it."""
    raw = data._raw("original")
    for key, entry in raw.items():
        m = entry["matrix"]
        with_dims = [[sum(r) - 1, *r] for r in m]
        assert parse_matrix(m, (12, 15)) == (m, None), key
        assert parse_matrix(with_dims, (12, 15)) == (m, None), key


def test_read_entries_json_csv_and_standard_input(tmp_path, monkeypatch):
    def write(name, text):
        (tmp_path / name).write_text(text)
        return tmp_path / name

    assert read_entries(write("one.json", "[[5]]")) == [{"matrix": [[5]]}]
    assert read_entries(write("two.json", "[[[5]], [[3], [3]]]")) == [{"matrix": [[5]]}, {"matrix": [[3], [3]]}]
    records = read_entries(write("rec.json", '[{"id": "quintic", "matrix": [[5]]}, "[[3],[3]]"]'))
    assert records == [{"id": "quintic", "matrix": [[5]]}, {"matrix": "[[3],[3]]"}]
    assert read_entries(write("m.csv", 'id,matrix\nquintic,"[[5]]"\n')) == [{"id": "quintic", "matrix": "[[5]]"}]
    monkeypatch.setattr("sys.stdin", io.StringIO('id,matrix\nb,"[[3],[3]]"\n'))
    assert read_entries("-") == [{"id": "b", "matrix": "[[3],[3]]"}]

    for name, text, reason in [
        ("empty.json", "", "empty input"),
        ("blank.csv", "\n \n", "empty input"),
        ("bad.json", "[[5]", "not JSON"),
        ("text.json", "quintic", "not JSON"),
        ("none.json", "[]", "no matrices"),
        ("object.json", '{"matrix": [[5]]}', "expected a JSON list"),
        ("nocol.csv", "id,m\nq,5\n", "'matrix' column"),
    ]:
        with pytest.raises(CicyError, match=reason) as e:
            read_entries(write(name, text))
        assert "\n" not in str(e.value)
    with pytest.raises(CicyError, match="no such file"):
        read_entries(tmp_path / "missing.json")


@pytest.fixture(scope="module")
def tiny_bundle(tmp_path_factory):
    config = tiny("dense", limit=400, epochs=1, depth=1, width=16)
    config["data"]["targets"] = ["h11", "h21"]
    result = fit(config)
    return bundle.save(tmp_path_factory.mktemp("bundle") / "model", result.model, config, result.targets)


def _reference(loaded, ids):
    """What the model predicts for shipped manifolds ``ids`` from the data set's own padded rows."""
    full = data.load()
    rows = [int(np.flatnonzero(full.frame["id"].to_numpy() == i)[0]) for i in ids]
    return loaded.predict(full.x[rows])


def test_predict_known_matrices_like_the_training_data(tiny_bundle, tmp_path):
    loaded = bundle.load(tiny_bundle)
    ref = _reference(loaded, [7890, 7884])  # the quintic and the bicubic in the shipped list
    source = tmp_path / "in.json"
    source.write_text(json.dumps([QUINTIC, [[4, 5]], BICUBIC, {"id": "b", "matrix": [[2, 3], [2, 3]]}]))
    records = predict_file(tiny_bundle, source).records
    assert [r["error"] for r in records] == [None] * 4
    assert [(r["h11"], r["h21"]) for r in records] == [(int(ref["h11"][k]), int(ref["h21"][k])) for k in (0, 0, 1, 1)]
    assert records[3]["id"] == "b" and records[3]["index"] == 3


def test_cli_predict_reports_each_bad_entry_and_still_predicts_the_rest(tiny_bundle, tmp_path, capsys):
    bad = [[[1, 2], [3]], [[6, -1]], [[2.5, 2.5]], [[float("nan")]], [[1] * 16], [[3], [1]], [[4]], [], "[[5]"]
    entries = [QUINTIC, *bad, BICUBIC]
    source = tmp_path / "mixed.json"
    source.write_text(json.dumps(entries))  # NaN is written as JSON's NaN extension, which Python reads back
    assert run_cli("predict", str(tiny_bundle), str(source)) == 1
    captured = capsys.readouterr()
    lines = captured.out.strip().splitlines()
    assert lines[0] == "index,h11,h21,euler,error" and len(lines) == len(entries) + 1
    errors = captured.err.strip().splitlines()
    assert len(errors) == len(entries) - 2
    assert all(e.startswith("error: entry ") for e in errors)
    assert errors[0].startswith("error: entry 1: ragged rows")
    first, last = lines[1].split(","), lines[-1].split(",")
    assert first[0] == "0" and first[1].isdigit() and first[2].isdigit() and first[3:] == ["-200", ""]
    assert last[0] == str(len(entries) - 1) and last[1].isdigit() and last[3] == "-162"


def test_cli_predict_json_output_from_standard_input(tiny_bundle, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("sys.stdin", io.StringIO("[[5]]"))
    assert run_cli("predict", str(tiny_bundle), "-", "--format", "json") == 0
    (record,) = json.loads(capsys.readouterr().out)
    assert set(record) == {"index", "h11", "h21", "euler", "error"} and record["error"] is None
    assert record["euler"] == -200
    out = tmp_path / "p.csv"
    (tmp_path / "in.csv").write_text('id,matrix\nquintic,"[[5]]"\n')
    assert run_cli("predict", str(tiny_bundle), str(tmp_path / "in.csv"), "--out", str(out)) == 0
    assert out.read_text().startswith("index,id,h11,h21,euler,error\n0,quintic,")


def test_cli_predict_whole_input_errors_are_one_line_exit_2(tiny_bundle, tmp_path, capsys):
    (tmp_path / "bad.json").write_text("not json")
    cases = [
        (str(tiny_bundle), str(tmp_path / "bad.json"), "not JSON"),
        (str(tiny_bundle), str(tmp_path / "missing.csv"), "no such file"),
        (str(tmp_path), str(tmp_path / "bad.json"), "not JSON"),  # input is read before the model
    ]
    for model, source, reason in cases:
        assert run_cli("predict", model, source) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error:") and reason in err and len(err.splitlines()) == 1
    (tmp_path / "ok.json").write_text("[[5]]")
    assert run_cli("predict", str(tmp_path / "nowhere"), str(tmp_path / "ok.json")) == 2
    assert "no such model folder" in capsys.readouterr().err


def test_every_valid_entry_gets_its_exact_euler_number(tiny_bundle, tmp_path):
    full = data.load()
    rows = full.frame.sample(25, random_state=0)
    matrices = [data._raw("original")[str(i)]["matrix"] for i in rows["id"]]
    source = tmp_path / "sample.json"
    source.write_text(json.dumps([*matrices, [[4]]]))
    records = predict_file(tiny_bundle, source).records
    assert [r["euler"] for r in records[:-1]] == [int(e) for e in rows["euler"]]
    assert records[-1]["euler"] is None and records[-1]["error"]


DEEP = "[" * 100_000 + "]" * 100_000

# (JSON text with the quintic first and the bicubic last around one hostile entry, that entry's reason)
HOSTILE = [
    ("[[" + "1" * 401 + "]]", "entry (0,0) is a number of 401 digits, not a degree"),
    ("[[" + "9" * 5000 + "]]", "entry (0,0) is a number of 5000 digits, not a degree"),
    ("[[100000000000000000000]]", "is far too large to be a degree"),
    ("[[1e400]]", "entry (0,0) = inf is not an integer"),
    (DEEP, "nested deeper than 20 levels"),
    ("[" * 22 + "5" + "]" * 22, "nested deeper than 20 levels"),
    ('{"id": "deep", "matrix": ' + DEEP + "}", "nested deeper than 20 levels"),
    (json.dumps(DEEP), "nested deeper than 20 levels"),  # a matrix given as JSON text
    (json.dumps("[[" + "7" * 5000 + "]]"), "entry (0,0) is a number of 5000 digits"),
    ('[["' + "x" * 10_000 + '"]]', "is not an integer"),
    ("[[[5]]]", "is not an integer"),
]


@pytest.mark.parametrize("entry, reason", HOSTILE, ids=[f"hostile{i}" for i in range(len(HOSTILE))])
def test_hostile_entries_get_one_line_and_the_valid_ones_are_still_predicted(tiny_bundle, tmp_path, capsys, entry, reason):
    source = tmp_path / "in.json"
    source.write_text(f"[[[5]], {entry}, [[3], [3]]]")
    assert run_cli("predict", str(tiny_bundle), str(source), "--format", "json") == 1
    captured = capsys.readouterr()
    records = json.loads(captured.out)
    assert [r["euler"] for r in records] == [-200, None, -162]
    assert records[1]["error"] and reason in records[1]["error"]
    (line,) = captured.err.strip().splitlines()
    assert line.startswith("error: entry 1: ") and reason in line and len(line) < 200


def test_a_single_matrix_nested_too_deep_is_one_bad_entry(tiny_bundle, tmp_path, capsys):
    source = tmp_path / "deep.json"
    source.write_text(DEEP)
    assert run_cli("predict", str(tiny_bundle), str(source)) == 1
    assert capsys.readouterr().err.strip() == "error: entry 0: nested deeper than 20 levels"


@pytest.mark.parametrize(
    "name, content",
    [
        ("bom.json", "\ufeff[[[5]], [[3], [3]]]".encode()),
        ("bom.csv", '\ufeffid,matrix\nq,"[[5]]"\nb,"[[3],[3]]"\n'.encode()),
        ("plain.csv", b'id,matrix\nq,"[[5]]"\nb,"[[3],[3]]"\n'),
        ("crlf.json", b"[[[5]],\r\n [[3], [3]]]\r\n"),
    ],
)
def test_a_byte_order_mark_is_accepted(tiny_bundle, tmp_path, name, content):
    source = tmp_path / name
    source.write_bytes(content)
    records = predict_file(tiny_bundle, source).records
    assert [r["euler"] for r in records] == [-200, -162] and all(r["error"] is None for r in records)


@pytest.mark.parametrize(
    "content, reason",
    [
        ('id,matrix\ncaf\u00e9,"[[5]]"\n'.encode("latin-1"), "in.csv: not UTF-8 text (byte 0xe9 at offset 13)"),
        ("[[[5]]]".encode("utf-16"), "in.csv: not UTF-8 text (byte 0xff at offset 0)"),
        (b"[[[5]]]\x80", "in.csv: not UTF-8 text (byte 0x80 at offset 7)"),
        (b"\x00\x00", "in.csv: "),
    ],
)
def test_other_bytes_than_utf8_are_one_line_naming_the_file(tiny_bundle, tmp_path, capsys, content, reason):
    source = tmp_path / "in.csv"
    source.write_bytes(content)
    assert run_cli("predict", str(tiny_bundle), str(source)) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and reason in err and len(err.splitlines()) == 1


def test_standard_input_is_read_as_utf8_bytes(tiny_bundle, monkeypatch, capsys):
    class Stdin:
        def __init__(self, raw):
            self.buffer = io.BytesIO(raw)

    monkeypatch.setattr("sys.stdin", Stdin("\ufeff[[5]]".encode()))
    assert run_cli("predict", str(tiny_bundle), "-") == 0
    assert capsys.readouterr().out.splitlines()[1].endswith(",-200,")
    monkeypatch.setattr("sys.stdin", Stdin(b"[[5]]\xfe"))
    assert run_cli("predict", str(tiny_bundle), "-") == 2
    assert capsys.readouterr().err.strip() == "error: standard input: not UTF-8 text (byte 0xfe at offset 5)"


@pytest.mark.parametrize(
    "out, extra, reason",
    [
        ("missing/p.csv", [], "--out {tmp}/missing/p.csv: folder {tmp}/missing does not exist"),
        ("folder", [], "--out {tmp}/folder: is a folder"),
        ("p.txt", [], "output format 'txt': choose csv or json"),
        ("p.csv", ["--format", "xml"], "output format 'xml': choose csv or json"),
    ],
)
def test_a_bad_out_is_refused_before_any_prediction_and_nothing_is_written(tiny_bundle, tmp_path, capsys, out, extra, reason):
    (tmp_path / "folder").mkdir()
    source = tmp_path / "in.json"
    source.write_text("[[5]]")
    before = sorted(p.name for p in tmp_path.rglob("*"))
    assert run_cli("predict", str(tmp_path / "nowhere"), str(source), "--out", str(tmp_path / out), *extra) == 2
    err = capsys.readouterr().err.strip()
    # The model folder does not exist either: --out was checked first, before anything was loaded.
    assert err.startswith("error: " + reason.format(tmp=tmp_path)) and len(err.splitlines()) == 1
    assert sorted(p.name for p in tmp_path.rglob("*")) == before


def test_out_is_written_whole_with_no_temporary_file_left(tiny_bundle, tmp_path):
    source = tmp_path / "in.json"
    source.write_text("[[[5]], [[4]]]")
    assert run_cli("predict", str(tiny_bundle), str(source), "--out", str(tmp_path / "p.json")) == 1
    assert [r["euler"] for r in json.loads((tmp_path / "p.json").read_text())] == [-200, None]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.json", "p.json"]


def test_a_bad_entry_is_the_only_line_on_stderr_of_a_fresh_process(tiny_bundle, tmp_path):
    """TensorFlow writes its start-up lines (oneDNN, absl) to the process's stderr before any setting can
    silence them: the CLI keeps them off, so the error is the one line there."""
    import os
    import subprocess
    import sys

    source = tmp_path / "in.json"
    source.write_text("[[[5]], [[4]]]")
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}  # as a user's shell has it
    out = subprocess.run(
        [sys.executable, "-m", "cicy_search.cli", "predict", str(tiny_bundle), str(source)],
        capture_output=True, text=True, timeout=300, env=env,
    )
    assert out.returncode == 1
    assert out.stderr.splitlines() == ["error: entry 1: dimension is sum(n_i) - columns = 3 - 1 = 2, not 3"]
    assert out.stdout.splitlines()[1].endswith(",-200,")
