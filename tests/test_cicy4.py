"""The CICY 4-fold list: reading the published format, validation, the columnar file, exact Euler numbers.

``tests/data/cicy4_sample.txt`` holds verifiable facts in the published format: records 1-5 of the published
list (the sextic and four more hypersurfaces, as quoted in SageMath's reader of it), and direct products whose
Hodge numbers follow from the Kuenneth formula: K3 x K3 (h11 = 40, h21 = 0, h31 = 40, h22 = 404, euler 24^2)
and T^2 x quintic (2, 102, 102, 204, euler 0), one with Null Hodge numbers and flags.
"""

from pathlib import Path

import numpy as np
import pytest

from bench.cicy4 import random_configuration
from cicy_search import cicy4, invariants
from cicy_search.errors import CicyError

from .conftest import run_cli

# The module-scoped fixtures here are made once: pytest-xdist runs all these tests on one worker.
pytestmark = pytest.mark.xdist_group("cicy4")

SAMPLE = Path(__file__).parent / "data" / "cicy4_sample.txt"
SEXTIC = "{1, 1, 1, {{6}}, 2610, False, 1, 0, 426, 1752, True}"
RECORD_2 = "{2, 1, 2, {{2, 5}}, 2190, False, 1, 0, 356, 1472, Null}"
K3K3 = "{3, 2, 2, {{4, 0}, {0, 4}}, 576, True, 40, 0, 40, 404, Null}"


def write(tmp_path, body: str) -> Path:
    path = tmp_path / "cicy4list.txt"
    path.write_text(body)
    return path


def test_sample_imports_with_the_published_numbers(tmp_path):
    r = cicy4.import_list(SAMPLE, tmp_path / "sample.npz")
    assert (r.records, r.products) == (8, 3) and r.out == tmp_path / "sample.npz"
    a = cicy4.read(r.out)
    assert a["x"].dtype == np.int8 and a["x"].shape == (8, 16, 20)
    assert a["x"][0, 0, 0] == 6 and a["x"][0].sum() == 6
    assert a["id"].tolist() == list(range(1, 9))
    assert a["euler"].tolist() == [2610, 2190, 1476, 1632, 1206, 576, 0, 0]
    assert a["product"].tolist() == [False] * 5 + [True] * 3
    assert [a[t][0] for t in cicy4.TARGETS] == [1, 0, 426, 1752]
    assert [a[t][5] for t in cicy4.TARGETS] == [40, 0, 40, 404]
    assert [a[t][7] for t in cicy4.TARGETS] == [-1] * 4  # Null Hodge numbers of a product
    assert a["flag"].tolist() == [1, -1, 1, 1, 1, -1, -1, -1]
    assert str(a["format"]) == cicy4.FORMAT and str(a["source"]) == SAMPLE.name and len(str(a["sha256"])) == 64
    s = cicy4.summary(a)
    assert s["manifolds"] == 5 and s["products"] == 3 and s["h31"] == (192, 426) and s["padding"] == (16, 20)
    assert cicy4.summary(a, keep_products=True)["manifolds"] == 8


def test_relations_hold_for_the_sextic():
    assert cicy4.relations(1, 0, 426) == (2610, 1752)
    assert cicy4.derived_hodge(1, 0, 2610) == (426, 1752)
    h11, h21 = np.array([1, 1]), np.array([0, 0])
    h31, h22 = cicy4.derived_hodge(h11, h21, np.array([2610, 2190]))
    assert h31.tolist() == [426, 356] and h22.tolist() == [1752, 1472]


def test_records_split_anywhere_across_reads_parse_the_same(tmp_path, monkeypatch):
    whole = cicy4.read(cicy4.import_list(SAMPLE, tmp_path / "a.npz").out)
    monkeypatch.setattr(cicy4, "READ_CHARS", 7)  # every record arrives in many pieces
    pieces = cicy4.read(cicy4.import_list(SAMPLE, tmp_path / "b.npz").out)
    for key in ("x", "id", "euler", "product", *cicy4.TARGETS, "flag"):
        assert np.array_equal(whole[key], pieces[key]), key


def test_euler_numbers_of_four_folds_are_the_published_ones():
    matrices = [[[6]], [[2, 5]], [[3, 4]], [[2, 2, 4]], [[2, 3, 3]], [[4, 0], [0, 4]], [[3, 0], [0, 5]]]
    assert invariants.euler_numbers(matrices).tolist() == [2610, 2190, 1476, 1632, 1206, 576, 0]
    assert invariants.euler_numbers([[[5]], [[3], [3]]]).tolist() == [-200, -162]  # 3-folds: the other path


def _dense_reference(q: np.ndarray) -> int:
    """Euler number from every intersection number t_abcd (the dense computation the fast path replaces)."""
    q = q[None]
    dims = tuple(int(s) - 1 for s in q[0].sum(axis=1))
    m = len(dims)
    t = invariants._top_coefficients(q, dims, 4)
    n1, p2 = invariants._chern_parts(q, dims)
    diag = t[(slice(None), *([np.arange(m)] * 4))]
    p4 = np.einsum("i,gi->g", n1, diag) - np.einsum("gak,gbk,gck,gdk,gabcd->g", q, q, q, q, t, optimize=True)
    p2p2 = np.einsum("gab,gcd,gabcd->g", p2, p2, t, optimize=True)
    euler, rem = np.divmod(p2p2 - 2 * p4, 8)
    assert not rem.any()
    return int(euler[0])


def test_fast_four_fold_euler_numbers_agree_with_the_dense_computation_and_ignore_order():
    rng = np.random.default_rng(3)
    matrices = []
    while len(matrices) < 60:
        q = random_configuration(rng, int(rng.integers(1, 9)), int(rng.integers(0, 6)))
        if q is not None:
            matrices.append(q)
    fast = invariants.euler_numbers(matrices)
    assert fast.tolist() == [_dense_reference(q) for q in matrices]
    assert (fast % 6 == 0).all()
    shuffled = [q[rng.permutation(q.shape[0])][:, rng.permutation(q.shape[1])] for q in matrices]
    assert invariants.euler_numbers(shuffled).tolist() == fast.tolist()
    x = np.zeros((len(matrices), 16, 20), dtype=np.int8)
    for k, q in enumerate(matrices):
        x[k, : q.shape[0], : q.shape[1]] = q
    shapes = np.array([q.shape for q in matrices])
    assert invariants.euler_numbers(x, shapes=shapes).tolist() == fast.tolist()


MALFORMED = [
    ("{3, 1, 2, {{3, 4}}, 1476, Fals, 1, 0, 237, 996, True}", "not a record of integers, flags and lists"),
    ("{3, 1, 2, {{3, 4}}, 1476, False, 1, 0, 237, True}", "expected 11 fields"),
    ("{0, 1, 2, {{3, 4}}, 1476, False, 1, 0, 237, 996, True}", "ID = 0 is not positive"),
    ("{3, 2, 2, {{3, 4}}, 1476, False, 1, 0, 237, 996, True}", "rows, cols = 2, 2 but the matrix is 1x2"),
    ("{3, 2, 2, {{3, 4}, {2}}, 1476, False, 1, 0, 237, 996, True}", "ragged matrix: row 1 has 1 entries"),
    ("{3, 1, 2, {{-3, 10}}, 1476, False, 1, 0, 237, 996, True}", "matrix entry (0,0) = -3 is negative"),
    ("{3, 1, 2, {{3.5, 4}}, 1476, False, 1, 0, 237, 996, True}", "matrix entry (0,0) = 3.5 is not an integer"),
    ("{3, 1, 2, {{True, 4}}, 1476, False, 1, 0, 237, 996, True}", "matrix entry (0,0) = True is not an integer"),
    ("{3, 17, 1, {" + ", ".join(["{2}"] * 17) + "}, 0, False, 1, 0, 0, 0, True}", "matrix size 17x1 exceeds 16x20"),
    ("{3, 1, 21, {{" + ", ".join(["1"] * 21) + "}}, 0, False, 1, 0, 0, 0, True}", "matrix size 1x21 exceeds 16x20"),
    ("{3, 2, 2, {{3, 4}, {1, 0}}, 1476, False, 1, 0, 237, 996, True}", "Calabi-Yau condition fails in row 1"),
    ("{3, 1, 1, {{5}}, -200, False, 1, 101, 0, 0, True}", "dimension is sum(n_i) - columns = 4 - 1 = 3, not 4"),
    ("{3, 1, 2, {{7, 0}}, 1476, False, 1, 0, 237, 996, True}", "matrix column 1 is zero"),
    ("{3, 1, 1, {{6}}, 2610, True, 1, 0, 426, 1752, True}", "direct-product flag is True but the matrix is not block-diagonal"),
    ("{3, 2, 2, {{4, 0}, {0, 4}}, 576, False, 40, 0, 40, 404, Null}", "direct-product flag is False but the matrix is block-diagonal"),
    ("{3, 1, 2, {{3, 4}}, 1476, False, 1, 0, 237, 996, 7}", "last flag = 7 is not True, False or Null"),
    ("{3, 1, 2, {{3, 4}}, 1476, 0, 1, 0, 237, 996, True}", "direct-product flag = 0 is not True, False or Null"),
    ("{3, 1, 2, {{3, 4}}, 1476, False, 1, 0, Null, 996, True}", "h31 = Null is not an integer (Null is accepted for products only)"),
    ("{3, 1, 2, {{3, 4}}, 1476, False, 1, -1, 236, 998, True}", "h21 = -1 is negative"),
    ("{3, 1, 2, {{3, 4}}, 1482, False, 1, 0, 237, 996, True}", "euler = 1482, but 6 (8 + h11 + h31 - h21) = 1476"),
    ("{3, 1, 2, {{3, 4}}, 1476, False, 1, 0, 237, 995, True}", "h22 = 995, but 44 + 4 h11 - 2 h21 + 4 h31 = 996"),
    ("{3, 1, 2, {{3, 4}}, 2610, False, 1, 0, 426, 1752, True}", "euler = 2610, but the Chern classes of the matrix give 1476"),
    ("{2, 1, 2, {{3, 4}}, 1476, False, 1, 0, 237, 996, True}", "the ID is repeated (first at record 2)"),
]


@pytest.mark.parametrize("record, reason", MALFORMED, ids=[r for _, r in MALFORMED])
def test_a_malformed_record_is_one_line_naming_it_and_nothing_is_written(tmp_path, capsys, record, reason):
    path = write(tmp_path, "{" + ", \n ".join([SEXTIC, RECORD_2, record, K3K3.replace("{3,", "{4,")]) + "}\n")
    out = tmp_path / "out.npz"
    assert run_cli("data", "import-cicy4", str(path), "--out", str(out)) == 2
    message = capsys.readouterr().err.strip().splitlines()[-1]
    ident = record[1 : record.index(",")]
    assert message.startswith(f"error: {path}: record 3 (ID {ident}): ") and reason in message, message
    assert list(tmp_path.iterdir()) == [path]


@pytest.mark.parametrize(
    "body, reason",
    [
        ("", "the file is empty"),
        ("[" + SEXTIC + "]", "it must start with '{'"),
        ("{" + SEXTIC + " " + RECORD_2 + "}", "record 2 (ID 2): expected a comma before the record"),
        ("{" + SEXTIC + ", " + RECORD_2, "after record 2: expected the closing '}' of the list"),
        ("{" + SEXTIC + ", " + RECORD_2 + "}, {3}", "after record 2: expected the closing '}'"),
        ("{" + SEXTIC + ", " + RECORD_2 + ", {3, 1, 2, {{3, 4}}, 1476, False, 1, 0, 237, 996, Tru}}", "record 3 (ID 3): not a record"),
    ],
)
def test_a_malformed_list_is_one_line_and_nothing_is_written(tmp_path, body, reason):
    path = write(tmp_path, body)
    with pytest.raises(CicyError, match="^" + str(path).replace(".", r"\.") + ": ") as e:
        cicy4.import_list(path, tmp_path / "out.npz")
    assert reason in str(e.value) and "\n" not in str(e.value)
    assert list(tmp_path.iterdir()) == [path]


def test_cli_import_prints_the_summary(tmp_path, capsys):
    out = tmp_path / "cicy4.npz"
    assert run_cli("data", "import-cicy4", str(SAMPLE), "--out", str(out)) == 0
    text = capsys.readouterr().out
    assert out.is_file() and "manifolds" in text and "192 .. 426" in text and "8 records (3 products" in text


def test_reading_something_else_is_a_clear_error(tmp_path):
    np.savez(tmp_path / "other.npz", x=np.zeros(3))
    with pytest.raises(CicyError, match="not an imported CICY 4-fold file"):
        cicy4.read(tmp_path / "other.npz")
    with pytest.raises(CicyError, match="no such file"):
        cicy4.read(tmp_path / "missing.npz")


# --- training on an imported list: a synthetic list whose labels satisfy the relations (bench.cicy4) ---

REPO = Path(__file__).parent.parent
ALL = ["h11", "h21", "h31", "h22"]


@pytest.fixture(scope="module")
def synthetic_npz(tmp_path_factory):
    from bench.cicy4 import synthetic_records, write_list

    folder = tmp_path_factory.mktemp("cicy4")
    text = write_list(synthetic_records(240, seed=5), folder / "cicy4list.txt")
    return cicy4.import_list(text, folder / "data" / "cicy4.npz").out


def test_an_imported_list_trains_from_int8_and_the_physics_heads_are_exact(synthetic_npz):
    from cicy_search import data
    from cicy_search.config import resolve
    from cicy_search.training import derive, network_targets, prepare

    config = resolve({"data": {"dataset": str(synthetic_npz), "targets": ALL, "physics": True, "stratify": False}, "model": {"head": "regression"}})
    d = config["data"]
    assert network_targets(d) == ["h11", "h21"]
    prepared = prepare(config)
    assert prepared.x["train"].dtype == np.int8 and prepared.shape == (16, 20)
    assert prepared.matrices["train"] is prepared.x["train"]  # not copied twice
    assert not data.load(str(synthetic_npz)).frame["product"].any()
    assert data.load(str(synthetic_npz), keep_products=True).frame["product"].sum() == 4
    x, y = prepared.matrices["test"], prepared.y["test"]
    true = {t: y[t] for t in ("h11", "h21")}
    stored = prepared.dataset.frame["euler"].to_numpy()[prepared.index["test"]]
    for euler in (stored, None):  # None: computed exactly from the matrices
        derived = derive(true, data.permute(x, 1) if euler is None else x, d, euler)
        assert all(np.array_equal(derived[t], y[t]) for t in ALL)


def test_four_fold_settings_are_checked():
    from cicy_search.config import resolve

    with pytest.raises(CicyError, match="h31 and h22 are Hodge numbers of 4-folds"):
        resolve({"data": {"targets": ["h11", "h31"]}})
    with pytest.raises(CicyError, match="must include h31 or h22"):
        resolve({"data": {"dataset": "x.npz", "targets": ["h11", "h21"], "physics": True}})
    with pytest.raises(CicyError, match="data.dataset"):
        resolve({"data": {"dataset": "cicy4list.txt"}})


def test_shipped_cicy4_studies_load_once_the_list_is_imported_and_say_how_otherwise(synthetic_npz, tmp_path, monkeypatch):
    from cicy_search.search import studyfile

    files = sorted((REPO / "studies").glob("cicy4_*.yaml"))
    assert len(files) >= 2
    monkeypatch.chdir(tmp_path)
    with pytest.raises(CicyError, match="data/cicy4.npz: no such file .*cicy-search data import-cicy4"):
        studyfile.load(files[0])
    monkeypatch.chdir(synthetic_npz.parent.parent)  # where data/cicy4.npz is
    specs = [studyfile.load(f) for f in files]
    assert all(s.base["data"]["dataset"] == "data/cicy4.npz" for s in specs)
    assert any(s.base["data"].get("physics") for s in specs)


def test_a_tiny_study_runs_end_to_end_on_an_imported_list(synthetic_npz, tmp_path, tracking_uri, mlflow_client):
    from cicy_search.search import study as studies
    from cicy_search.search import studyfile

    spec = studyfile.parse({
        "study": "cicy4_tiny",
        "base": "dense",
        "data": {"dataset": str(synthetic_npz), "targets": ALL, "physics": True, "stratify": False},
        "model": {"head": "regression"},
        "train": {"epochs": 2, "batch_size": 32},
        "space": {"model.width": {"type": "int", "low": 8, "high": 32, "log": True}},
        "sampler": {"name": "random", "seed": 1},
        "budget": {"n_trials": 2},
    })
    summary = studies.run(spec, storage=f"sqlite:///{tmp_path / 'optuna.db'}", tracking_uri=tracking_uri)
    assert summary.finished == 2
    run = mlflow_client.get_run(summary.study.best_trial.user_attrs["mlflow_run_id"])
    assert {f"val_{t}_accuracy" for t in ALL} <= set(run.data.metrics)
    assert run.data.tags["dataset_hash"] == cicy4.source_sha256(synthetic_npz)


def test_the_import_benchmark_runs_on_a_small_list(tmp_path):
    from bench import cicy4 as bench

    result = bench.main(["--records", "400", "--pool", "60", "--out", str(tmp_path / "cicy4.json")])
    assert result["import"]["records"] == 400 and result["pool"] == 60
    assert result["import"]["peak_rss_mb"] > 0 and result["import"]["seconds"]["euler"] > 0
