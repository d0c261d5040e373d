import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("MLFLOW_ENABLE_ASYNC_LOGGING", "false")

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def tracking_uri(tmp_path_factory):
    """One real SQLite MLflow store for the session (creating one runs its migrations: seconds)."""
    folder = tmp_path_factory.mktemp("mlflow")
    return f"sqlite:///{folder / 'mlflow.db'}"


@pytest.fixture(scope="session")
def mlflow_client(tracking_uri):
    from cicy_search import tracking

    return tracking.client(tracking_uri)


@pytest.fixture(autouse=True)
def _local_home(tmp_path, monkeypatch):
    """Keep every test's default local store out of the working tree."""
    monkeypatch.setenv("CICY_SEARCH_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("CICY_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


def tiny(family="dense", limit=600, epochs=1, **model):
    """A resolved config that trains in a second or two on a slice of the real data."""
    from cicy_search.config import resolve

    return resolve(
        {
            "name": f"tiny-{family}",
            "data": {"limit": limit},
            "model": {"family": family, **model},
            "train": {} if family == "svm" else {"epochs": epochs, "batch_size": 32},
        }
    )


def run_cli(*args):
    """Run the CLI in-process; returns (exit code, captured stdout+stderr is read with capsys)."""
    from cicy_search.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(list(args))
    return exit_info.value.code


@pytest.fixture(scope="session")
def chromium():
    """Headless Chromium for render checks: skipped (visibly) without it, a failure when CI=true."""
    from cicy_search.reporting import browser

    path = browser.find()
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail("CI=true but no Chromium: .ci/run must apt-get install chromium")
        pytest.skip("no headless Chromium (apt-get install chromium): report render checks skipped")
    return path
