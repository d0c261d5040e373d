"""A pytest plugin: CPU seconds of each test (its process and the child processes it reaps, setup included).

    CPUPROF_OUT=cpu.jsonl .venv/bin/python -m pytest -p bench.cpuprof      # one JSON line a test
    python -m bench.cpuprof cpu.jsonl                                        # the sum per test file

CPU seconds, unlike wall time, change little with the load; docs/performance.md, "The test suite", uses them.
"""

import json
import os
import resource
import sys
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


def main(path: str) -> None:
    files: Counter = Counter()
    for line in open(path):
        r = json.loads(line)
        files[r["id"].split("::")[0]] += r["self"] + r["child"]
    print(f"{sum(files.values()):8.1f}  all tests")
    for name, seconds in files.most_common():
        print(f"{seconds:8.1f}  {name}")


if __name__ == "__main__":
    main(sys.argv[1])
