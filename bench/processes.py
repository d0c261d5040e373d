"""For the servers the benches and tests start: a free loopback port, stopping a process group, the CPU they use."""

from __future__ import annotations

import os
import signal
import socket
import subprocess


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop_process_group(proc: subprocess.Popen, sig: int = signal.SIGTERM, seconds: float = 15) -> None:
    """Send ``sig`` to the process group (a server's workers too), SIGKILL what is left after ``seconds``."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, sig)
        proc.wait(seconds)
    except (subprocess.TimeoutExpired, ProcessLookupError):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(10)


class CpuMeter:
    """CPU seconds (user + system) of process groups, each a list of root processes and all their descendants
    (the workers; the mlflow server's gunicorn processes; PostgreSQL's backends), and of the whole machine.

    A process that exits between two reads loses what it used since the first: every group here is long-lived
    (pooled connections, a fixed set of server workers).
    """

    def __init__(self, roots: dict[str, list[int]], alone: tuple[str, ...] = ()):
        self.roots = roots
        self.alone = alone  # groups counted without their descendants (the bench itself: the others are its children)

    def read(self) -> dict:
        import psutil

        out: dict = {}
        for group, pids in self.roots.items():
            used = out[group] = {}
            for pid in pids:
                try:
                    root = psutil.Process(pid)
                    family = [root] if group in self.alone else [root, *root.children(recursive=True)]
                except psutil.Error:
                    continue
                for proc in family:
                    try:
                        t = proc.cpu_times()
                        used[proc.pid] = t.user + t.system
                    except psutil.Error:
                        pass
        t = psutil.cpu_times()
        out["machine"] = {"busy": t.user + t.nice + t.system + getattr(t, "irq", 0) + getattr(t, "softirq", 0),
                          "steal": getattr(t, "steal", 0.0)}  # fmt: skip
        return out

    def since(self, before: dict) -> dict[str, float]:
        """CPU seconds per group since ``before`` (a ``read``), ``machine_busy`` and ``machine_steal`` too."""
        now = self.read()
        out = {group: round(sum(v - before.get(group, {}).get(pid, 0.0) for pid, v in now[group].items()), 2) for group in self.roots}
        out.update({f"machine_{k}": round(now["machine"][k] - before["machine"][k], 2) for k in ("busy", "steal")})
        return out
