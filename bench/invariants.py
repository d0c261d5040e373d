"""CPU seconds of the exact invariants and the Koszul counts on every matrix of both shipped 3-fold lists.

    python -m bench.invariants      # one line a list; docs/performance.md, "Invariants and the canonical form"
"""

import gzip
import json
import os
import time
from importlib import resources

from cicy_search import invariants


def main() -> None:
    for name in ("cicy3o.json.gz", "cicy3f.json.gz"):
        raw = json.loads(gzip.decompress((resources.files("cicy_search") / "data" / name).read_bytes()))
        matrices = [raw[k]["matrix"] for k in sorted(raw, key=int)]
        start = time.process_time()
        invariants.invariants(matrices)
        exact = time.process_time() - start
        start = time.process_time()
        for m in matrices:
            invariants.h11_koszul(m)
        koszul = time.process_time() - start
        print(f"{name}: {len(matrices)} matrices, exact invariants {exact:.1f} CPU-s, Koszul counts {koszul:.1f} CPU-s "
              f"({1000 * koszul / len(matrices):.2f} ms a matrix)", flush=True)
    print("load", " ".join(f"{v:.1f}" for v in os.getloadavg()))


if __name__ == "__main__":
    main()
