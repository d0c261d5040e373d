"""A damaged model folder (truncated, random or empty model file; missing or malformed targets.json or config.yaml)
is one ``error:`` line naming the file and exit code 2, never a traceback."""

import json
import os
import shutil

import pytest

from cicy_search import bundle
from cicy_search.errors import CicyError
from cicy_search.training import fit

from .conftest import run_cli, tiny

# One worker makes this module's fixtures once (pytest-xdist --dist loadgroup).
pytestmark = pytest.mark.xdist_group("faults_bundle")


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    config = tiny("dense", limit=400, epochs=1, depth=1, width=8)
    result = fit(config)
    return bundle.save(tmp_path_factory.mktemp("bundle") / "model", result.model, config, result.targets)


def _truncate(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _random(path):
    path.write_bytes(os.urandom(4096))


def _empty(path):
    path.write_bytes(b"")


def _remove(path):
    path.unlink()


def _text(text):
    return lambda path: path.write_text(text)


DAMAGES = [
    ("model.keras", _truncate, "not a readable model file"),
    ("model.keras", _random, "not a readable model file"),
    ("model.keras", _empty, "not a readable model file"),
    ("model.keras", _remove, "no such file"),
    ("targets.json", _remove, "no such file"),
    ("targets.json", _empty, "not JSON"),
    ("targets.json", _random, "not"),  # not UTF-8, or not JSON
    ("targets.json", _text('{"name": "h11"}'), "expected a non-empty list"),
    ("targets.json", _text("[]"), "expected a non-empty list"),
    ("targets.json", _text('[{"name": "h11", "low": 5, "high": 1}]'), "low <= high"),
    ("targets.json", _text('[{"name": "h11", "low": "1", "high": 2}]'), "expected a non-empty list"),
    ("config.yaml", _text("model: [unclosed"), "not valid YAML"),
    ("config.yaml", _text("- a list\n"), "expected a YAML mapping"),
    ("config.yaml", _text("model:\n  family: nonsense\n"), "not a run config: unknown model family"),
    ("config.yaml", _text("data:\n  limit: -3\n"), "not a run config"),
    ("config.yaml", _random, "config.yaml"),
]


@pytest.mark.parametrize("name,damage,reason", DAMAGES, ids=[f"{n}-{d.__name__}-{i}" for i, (n, d, _) in enumerate(DAMAGES)])
def test_damaged_model_folder_is_one_line_naming_the_file(saved, tmp_path, capsys, name, damage, reason):
    folder = shutil.copytree(saved, tmp_path / "model")
    damage(folder / name)
    source = tmp_path / "in.json"
    source.write_text(json.dumps([[[5]]]))
    capsys.readouterr()
    assert run_cli("predict", str(folder), str(source)) == 2
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), captured.err
    assert name in lines[0] and reason in lines[0], lines[0]
    assert captured.out == ""


def test_an_intact_folder_still_loads_and_predicts(saved):
    loaded = bundle.load(saved)
    assert [t.name for t in loaded.targets] == ["h11"]
    from cicy_search.data import pad

    assert set(loaded.predict(pad([[[5]]], loaded.shape))) >= {"h11"}


def test_library_load_raises_the_user_error(saved, tmp_path):
    folder = shutil.copytree(saved, tmp_path / "model")
    _truncate(folder / "model.keras")
    with pytest.raises(CicyError, match="model.keras: not a readable model file"):
        bundle.load(folder)
