"""Writes the best complete trial of studies/matrix_h11.yaml (chosen on validation) as a full run config.

Run from the worktree: PYTHONPATH=$PWD python studies/runs/matrix_best_recipe.py [wall_minutes]
Output: recipes/matrix_h11_best.yaml, headed by what chose it; the config is the trial's own (its seed included).
"""

import sys
import warnings

warnings.filterwarnings("ignore")
from cicy_search.config import dump_yaml, resolve  # noqa: E402
from cicy_search.search import study as study_mod  # noqa: E402

s = study_mod.load("matrix_h11", storage="journal:studies/runs/matrix_h11.journal")
trials = s.get_trials(deepcopy=False)
finished = [t for t in trials if t.state.name in ("COMPLETE", "PRUNED")]
best = max((t for t in trials if t.state.name == "COMPLETE"), key=lambda t: t.value)
seconds = (best.datetime_complete - best.datetime_start).total_seconds()
wall = f", {sys.argv[1]} min" if len(sys.argv) > 1 else ""
config = resolve(dict(best.user_attrs["config"], name="matrix_h11_best"))
header = (
    f"# The best trial (trial {best.number}, val_accuracy {best.value:.4f}, {seconds:.0f} s on 2 shared cores) of\n"
    f"# studies/matrix_h11.yaml after its {len(finished)} finished trials{wall}, chosen on validation, as its full run\n"
    "# config: h11 from the configuration matrix alone (no invariants as input), row/column message passing.\n"
    "# The results table's matrix-only row (recipes/results.yaml) retrains it on split seeds 0, 1, 2.\n"
)
open("recipes/matrix_h11_best.yaml", "w").write(header + dump_yaml(config))
print(f"trial {best.number} val {best.value:.4f} ({len(finished)} finished) -> recipes/matrix_h11_best.yaml")
