"""Re-ranks a matrix study's top trials on validation over several training seeds, to choose its best config.

One trial's validation accuracy is one training seed on one split: at 789 validation matrices the seeds alone move it
by about a point, as much as the gaps between the top trials. This retrains each of the TOP best complete trials'
configs with SEEDS training seeds (seeds 0, 1000, ...) on the study's own split, reads validation only (never the
test split), and writes a table of the means, best first: the re-ranked choice is still made on validation.

    PYTHONPATH=$PWD .venv/bin/python studies/runs/matrix_rerank.py STUDY TOP SEEDS OUT.md
"""

import sys
import warnings

import numpy as np

sys.path.insert(0, "studies/runs/probes")
warnings.filterwarnings("ignore")
from ensemble_probe import members  # noqa: E402

from cicy_search.search import study as study_mod  # noqa: E402

name, top, seeds, out = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
s = study_mod.load(name, storage=f"journal:studies/runs/{name}.journal")
complete = sorted((t for t in s.get_trials(deepcopy=False) if t.state.name == "COMPLETE"), key=lambda t: -t.value)[:top]
rows = []
for t in complete:
    config = t.user_attrs["config"]
    d = config["data"]
    vals = [one for one, _, _ in members(config, d["train"], d["seed"], seeds, label=f"trial {t.number}: ")]
    rows.append((float(np.mean(vals)), float(np.std(vals)), t, vals))
rows.sort(key=lambda r: -r[0])
lines = [
    f"# {name}: the {len(rows)} best complete trials re-ranked on validation over {seeds} training seeds",
    "",
    f"`PYTHONPATH=$PWD .venv/bin/python studies/runs/matrix_rerank.py {name} {top} {seeds} {out}`; split seed "
    f"{complete[0].user_attrs['config']['data']['seed']}, train fraction {complete[0].user_attrs['config']['data']['train']}, "
    "training seeds 0, 1000, ...; the test split is not read.",
    "",
    "| trial | study's val | val per training seed | mean ± std | update_layers, depth, width |",
    "|---|---|---|---|---|",
]
for mean, std, t, vals in rows:
    m = t.user_attrs["config"]["model"]
    lines.append(
        f"| {t.number} | {t.value:.4f} | {', '.join(f'{v:.4f}' for v in vals)} | **{mean:.4f} ± {std:.4f}** | "
        f"{m.get('update_layers', 1)}, {m['depth']}, {m['width']} |"
    )
open(out, "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
