"""A pytest plugin: CPU seconds of each test (its process and the child processes it reaps, setup included), and
the machine's idle cores while the tests run.

    CPUPROF_OUT=cpu.jsonl .venv/bin/python -m pytest -p bench.cpuprof      # one JSON line a test, cpu.jsonl.idle
    python -m bench.cpuprof cpu.jsonl                                        # the sum per test file, where cores idled

CPU seconds, unlike wall time, change little with the load; docs/performance.md, "The test suite", uses them.
The main process (not pytest-xdist's workers) samples /proc/stat once a second into ``CPUPROF_OUT.idle``: idle
core-seconds, matched to the tests running then, show where a parallel run waits instead of computing.
"""

import json
import os
import resource
import sys
import threading
import time
from collections import Counter

import pytest


def _cpu() -> tuple[float, float]:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime, children.ru_utime + children.ru_stime


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    before, start, epoch = _cpu(), time.monotonic(), time.time()
    yield
    after, out = _cpu(), os.environ.get("CPUPROF_OUT")
    if out:
        with open(out, "a") as f:
            f.write(json.dumps({"id": item.nodeid, "worker": os.environ.get("PYTEST_XDIST_WORKER"),
                                "self": round(after[0] - before[0], 2), "child": round(after[1] - before[1], 2),
                                "wall": round(time.monotonic() - start, 2), "start": round(epoch, 2)}) + "\n")


def _busy() -> tuple[int, int]:
    """All cores' idle and total clock ticks since boot (/proc/stat's first line: idle and iowait count as idle)."""
    ticks = [int(v) for v in open("/proc/stat").readline().split()[1:9]]
    return ticks[3] + ticks[4], sum(ticks)


def _sample_idle(path: str, cores: int) -> None:
    previous = _busy()
    while True:
        time.sleep(1.0)
        now = _busy()
        idle = cores * (now[0] - previous[0]) / max(1, now[1] - previous[1])
        with open(path, "a") as f:
            f.write(f"{time.time():.2f} {idle:.3f}\n")  # idle core-seconds in the second that ended then
        previous = now


def pytest_configure(config):
    out = os.environ.get("CPUPROF_OUT")
    if out and not os.environ.get("PYTEST_XDIST_WORKER") and os.path.exists("/proc/stat"):
        threading.Thread(target=_sample_idle, args=(out + ".idle", os.cpu_count() or 1), daemon=True).start()


def idle_windows(tests: list[dict], idle: list[tuple[float, float]], window: float = 10.0, least: float = 1.5):
    """(seconds from the first sample, idle core-seconds, tests of over a second running then) for each window
    of ``window`` seconds with at least ``least`` idle core-seconds."""
    if not idle:
        return []
    first, out = idle[0][0], []
    for k in range(int((idle[-1][0] - first) // window) + 1):
        a, b = first + k * window, first + (k + 1) * window
        seconds = sum(v for t, v in idle if a <= t < b)
        if seconds >= least:
            running = sorted({r["id"] for r in tests if r["wall"] > 1 and r["start"] < b and r["start"] + r["wall"] > a})
            out.append((k * window, seconds, running))
    return out


def main(path: str) -> None:
    files: Counter = Counter()
    tests = [json.loads(line) for line in open(path)]
    for r in tests:
        files[r["id"].split("::")[0]] += r["self"] + r["child"]
    print(f"{sum(files.values()):8.1f}  all tests")
    for name, seconds in files.most_common():
        print(f"{seconds:8.1f}  {name}")
    if os.path.exists(path + ".idle"):
        idle = [tuple(map(float, line.split())) for line in open(path + ".idle")]
        print(f"\n{sum(v for _, v in idle):8.1f}  idle core-seconds in {len(idle)} s; windows of 10 s with 1.5 or more:")
        for at, seconds, running in idle_windows(tests, idle):
            print(f"{at:6.0f} s {seconds:5.1f}  " + "; ".join(running))


if __name__ == "__main__":
    main(sys.argv[1])
