"""The 4-fold import stores nothing wrapped (each value is range-checked against its column) and refuses inputs and
outputs it cannot use (gzip, other bytes than UTF-8, --out a folder or unwritable) with one line, before the work."""

import gzip
import os

import numpy as np
import pytest

from cicy_search import cicy4

from .conftest import run_cli
from .test_cicy4 import K3K3, RECORD_2, SAMPLE, SEXTIC

BIG = 10**30  # past int64 too: must be refused, not overflow numpy

OUT_OF_RANGE = [
    (SEXTIC.replace("{1,", "{2147483648,"), "ID = 2147483648 is larger than the id column holds (2147483647, int32)"),
    (SEXTIC.replace("{1,", f"{{{BIG},"), f"ID = {BIG} is larger than the id column holds"),
    ("{3, 1, 1, {{6}}, 240054, False, 1, 0, 40000, 160048, True}", "h31 = 40000 is larger than the h31 column holds (32767, int16)"),
    ("{3, 2, 2, {{4, 0}, {0, 4}}, 576, True, 32768, 0, 40, 404, Null}", "h11 = 32768 is larger than the h11 column holds"),
    ("{3, 2, 2, {{4, 0}, {0, 4}}, 576, True, 40, 0, 40, " + str(BIG) + ", Null}", "h22 = " + str(BIG) + " is larger"),
    ("{3, 2, 2, {{4, 0}, {0, 4}}, 2147483648, True, 40, 0, 40, 404, Null}", "euler = 2147483648 is outside what the euler column holds"),
    ("{3, 2, 2, {{4, 0}, {0, 4}}, -" + str(BIG) + ", True, 40, 0, 40, 404, Null}", "euler = -" + str(BIG) + " is outside"),
]


@pytest.mark.parametrize("record, reason", OUT_OF_RANGE, ids=[r.split(" is")[0] for _, r in OUT_OF_RANGE])
def test_a_value_too_large_for_its_column_is_one_line_naming_record_and_field(tmp_path, capsys, record, reason):
    path = tmp_path / "cicy4list.txt"
    records = [RECORD_2.replace("{2,", "{5,"), K3K3.replace("{3,", "{4,"), record]
    path.write_text("{" + ", ".join(records) + "}")
    out = tmp_path / "out.npz"
    assert run_cli("data", "import-cicy4", str(path), "--out", str(out)) == 2
    err = capsys.readouterr().err.strip()
    ident = record[1 : record.index(",")]
    assert err.startswith(f"error: {path}: record 3 (ID {ident}): ") and reason in err and "\n" not in err, err
    assert not out.exists()


def test_the_largest_values_the_columns_hold_are_stored_exactly(tmp_path):
    path = tmp_path / "cicy4list.txt"
    edge = K3K3.replace("{3,", "{2147483647,").replace("40, 0, 40, 404", "32767, 0, 40, 404")
    path.write_text("{" + ", ".join([SEXTIC, edge]) + "}")
    a = cicy4.read(cicy4.import_list(path, tmp_path / "out.npz").out)
    assert a["id"].tolist() == [1, 2147483647] and a["h11"].tolist() == [1, 32767]


@pytest.mark.parametrize("compress", [lambda b: gzip.compress(b), lambda b: gzip.compress(b, compresslevel=1)[:40]])
def test_a_gzip_file_is_one_line_saying_to_decompress_it(tmp_path, capsys, compress):
    path = tmp_path / "cicy4list.txt.gz"
    path.write_bytes(compress(SAMPLE.read_bytes()))
    assert run_cli("data", "import-cicy4", str(path), "--out", str(tmp_path / "out.npz")) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"error: {path}: is gzip-compressed: decompress it first (gunzip {path.name})"


@pytest.mark.parametrize("prefix", [b"{\xff", b"\xfe\xfe", b"{" + SEXTIC.encode() + b", \xc3"])
def test_other_bytes_than_utf8_are_one_line(tmp_path, capsys, prefix):
    path = tmp_path / "cicy4list.txt"
    path.write_bytes(prefix + b" " + RECORD_2.encode() + b"}")
    assert run_cli("data", "import-cicy4", str(path), "--out", str(tmp_path / "out.npz")) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {path}: not UTF-8 text (byte 0x") and "\n" not in err, err


def _refused_before_work(monkeypatch):
    """Fail the test if the import starts parsing: an unusable --out must be refused first."""

    def parse(*args, **kwargs):
        raise AssertionError("the list was parsed before --out was checked")

    monkeypatch.setattr(cicy4, "_parse", parse)


def test_out_a_folder_is_refused_before_the_import(tmp_path, capsys, monkeypatch):
    _refused_before_work(monkeypatch)
    for out, reason in [
        (tmp_path, "is a folder, expected a .npz file"),
        (tmp_path / "folder.npz", "is a folder, expected a .npz file"),
        (tmp_path / "out.txt", "must end in .npz"),
        (tmp_path / "file" / "out.npz", "is not a folder"),
    ]:
        (tmp_path / "folder.npz").mkdir(exist_ok=True)
        (tmp_path / "file").write_text("")
        assert run_cli("data", "import-cicy4", str(SAMPLE), "--out", str(out)) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and str(out) in err and reason in err and "\n" not in err, err


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_out_in_a_read_only_folder_is_refused_before_the_import(tmp_path, capsys, monkeypatch):
    _refused_before_work(monkeypatch)
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        for out in (folder / "out.npz", folder / "sub" / "out.npz"):
            assert run_cli("data", "import-cicy4", str(SAMPLE), "--out", str(out)) == 2
            assert capsys.readouterr().err.strip() == f"error: --out {out}: not writable"
    finally:
        folder.chmod(0o755)


def test_a_valid_import_into_a_new_folder_still_works(tmp_path):
    out = tmp_path / "new" / "deeper" / "sample.npz"
    r = cicy4.import_list(SAMPLE, out)
    assert r.records == 8 and np.array_equal(cicy4.read(out)["id"], np.arange(1, 9))
