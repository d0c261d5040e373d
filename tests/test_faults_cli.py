"""Stores a command cannot use are one ``error:`` line and exit code 2: a tracking URI MLflow has no store for, and
the default local store in a working folder that cannot be written."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import run_cli

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("uri, scheme", [("foo://bar", "foo"), ("s3x://bucket/x", "s3x"), ("nonsense:thing", "nonsense")])
@pytest.mark.parametrize("command", [["train", "dense", "--epochs", "1"], ["report", "compare", "some-run"]])
def test_a_tracking_uri_mlflow_has_no_store_for_is_one_line(capsys, uri, scheme, command):
    assert run_cli(*command, "--tracking-uri", uri) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: MLflow tracking URI {scheme}:...: MLflow has no store for the scheme '{scheme}' (it knows ")
    assert "sqlite:" in err and "\n" not in err


COMMANDS = [["train", "dense", "--epochs", "1"], ["study", "status", "somestudy"], ["study", "run", str(ROOT / "studies" / "quickstart.yaml")]]


def _cicy_search(command, cwd, **env):
    base = {k: v for k, v in os.environ.items() if k not in ("CICY_SEARCH_HOME", "MLFLOW_TRACKING_URI", "CICY_STORAGE")}
    base.update(PYTHONPATH=str(ROOT), CICY_CACHE_DIR="none", **env)
    return subprocess.run([sys.executable, "-m", "cicy_search", *command], cwd=cwd, env=base, capture_output=True, text=True, timeout=300)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders (the variant below runs instead)")
@pytest.mark.parametrize("command", COMMANDS)
def test_the_default_store_in_a_read_only_working_folder_is_one_line(tmp_path, command):
    work = tmp_path / "readonly"
    work.mkdir()
    work.chmod(0o555)
    try:
        done = _cicy_search(command, work)
    finally:
        work.chmod(0o755)
    assert done.returncode == 2, done.stderr[-2000:]
    assert done.stderr.strip() == (
        f"error: {work / 'mlruns'}: cannot create the local store folder (Permission denied): run from a writable folder, "
        "or set CICY_SEARCH_HOME to one"
    ), done.stderr[-2000:]


@pytest.mark.slow
@pytest.mark.parametrize("command", COMMANDS)
def test_a_local_store_folder_that_cannot_be_created_is_one_line(tmp_path, command):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    done = _cicy_search(command, tmp_path, CICY_SEARCH_HOME=str(blocker / "home"))
    assert done.returncode == 2, done.stderr[-2000:]
    assert done.stderr.strip() == (
        f"error: {blocker / 'home'}: cannot create the local store folder (Not a directory): run from a writable folder, "
        "or set CICY_SEARCH_HOME to one"
    ), done.stderr[-2000:]
