"""Real services for the cluster tests: a PostgreSQL server (given by .ci/run) and an MLflow server.

``CICY_TEST_POSTGRES_URL`` names a PostgreSQL role that may create databases; every test session
works in fresh databases it drops at the end. Without it the tests that need PostgreSQL skip with
the reason shown, except under CI=true where a missing server is a failure.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from bench.cluster import SERVER_POOL
from bench.processes import free_port, stop_process_group

ENV = "CICY_TEST_POSTGRES_URL"


def postgres_or_skip() -> str:
    url = os.environ.get(ENV)
    if url:
        return url
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true but {ENV} is not set: .ci/run must install and start PostgreSQL")
    pytest.skip(f"no PostgreSQL: set {ENV}=postgresql://USER:PASSWORD@HOST:PORT/DB (a role with CREATEDB; see .ci/run)")


def _admin(url: str):
    import psycopg2

    conn = psycopg2.connect(url.replace("postgresql+psycopg2://", "postgresql://"), connect_timeout=10)
    conn.autocommit = True
    return conn


class Databases:
    """Creates throwaway databases next to the one in the URL; drops them all on ``close``."""

    def __init__(self, url: str):
        self.url = url
        self.names: list[str] = []
        try:
            _admin(url).close()
        except Exception as e:  # a configured server that does not answer is an error, not a skip
            pytest.fail(f"{ENV} is set but PostgreSQL does not answer: {e}")

    def new(self, prefix: str = "cicy_test") -> str:
        name = f"{prefix}_{secrets.token_hex(4)}"
        conn = _admin(self.url)
        with conn.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{name}"')
        conn.close()
        self.names.append(name)
        head, _, _ = self.url.rpartition("/")
        return f"{head}/{name}"

    def close(self) -> None:
        conn = _admin(self.url)
        with conn.cursor() as cur:
            for name in self.names:
                cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.close()


def wait_http(url: str, seconds: float, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before {url} answered")
        try:
            urllib.request.urlopen(url, timeout=2).read()
            return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"{url} did not answer within {seconds:.0f} s")


class MlflowServer:
    """``mlflow server`` on a loopback port with a PostgreSQL backend and a local artifact store."""

    def __init__(self, backend: str, artifacts: Path, log: Path, allowed_hosts: str):
        self.port = free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        cmd = [
            sys.executable, "-m", "mlflow", "server",
            "--backend-store-uri", backend,
            "--artifacts-destination", str(artifacts),
            "--host", "127.0.0.1", "--port", str(self.port),
            "--workers", "1",
            "--allowed-hosts", allowed_hosts,
        ]  # fmt: skip
        self.log = log
        # The database pool the recipes give the server (docker/compose.yaml, deploy/kubernetes/mlflow.yaml).
        env = {**os.environ, **SERVER_POOL}
        self.proc = subprocess.Popen(cmd, stdout=open(log, "wb"), stderr=subprocess.STDOUT, start_new_session=True, env=env)
        try:
            wait_http(self.uri + "/health", 180, self.proc)
        except Exception:
            self.stop()
            raise RuntimeError(f"mlflow server did not start: {log.read_text()[-2000:]}") from None

    def stop(self) -> None:
        stop_process_group(self.proc)
