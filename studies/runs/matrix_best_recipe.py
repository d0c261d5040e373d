"""Writes the best complete trial of a matrix study (chosen on validation) as a full run config.

Run from the worktree: PYTHONPATH=$PWD python studies/runs/matrix_best_recipe.py [wall_minutes [study [trial]]]
Output: recipes/STUDY_best.yaml (study: matrix_h11 unless named, e.g. matrix_h11_family), headed by what chose it;
the config is the trial's own (its seed and, for the family study, its family included). A trial number picks that
complete trial instead of the highest validation: the one ``matrix_rerank.py`` put first (mean validation over
training seeds).
"""

import sys
import warnings

warnings.filterwarnings("ignore")
from cicy_search.config import dump_yaml, resolve  # noqa: E402
from cicy_search.search import study as study_mod  # noqa: E402

name = sys.argv[2] if len(sys.argv) > 2 else "matrix_h11"
s = study_mod.load(name, storage=f"journal:studies/runs/{name}.journal")
trials = s.get_trials(deepcopy=False)
finished = [t for t in trials if t.state.name in ("COMPLETE", "PRUNED")]
complete = [t for t in trials if t.state.name == "COMPLETE"]
chosen = int(sys.argv[3]) if len(sys.argv) > 3 else None
best = next(t for t in complete if t.number == chosen) if chosen is not None else max(complete, key=lambda t: t.value)
how = (
    "chosen on validation: first of its best trials re-ranked on mean validation over training seeds (studies/runs/matrix_rerank.py)"
    if chosen is not None else "chosen on validation"
)
seconds = (best.datetime_complete - best.datetime_start).total_seconds()
wall = f", {sys.argv[1]} min" if len(sys.argv) > 1 else ""
config = resolve(dict(best.user_attrs["config"], name=f"{name}_best"))
family = config["model"]["family"] + (f" ({config['model']['layer']})" if "layer" in config["model"] else "")
header = (
    f"# The best trial (trial {best.number}, val_accuracy {best.value:.4f}, {seconds:.0f} s on 2 shared cores) of\n"
    f"# studies/{name}.yaml after its {len(finished)} finished trials{wall}, {how}, as its full run\n"
    f"# config: {', '.join(config['data']['targets'])} from the configuration matrix alone (no invariants as input), family {family}.\n"
    "# The results table's matrix-only row (recipes/results.yaml) retrains it on split seeds 0, 1, 2.\n"
)
open(f"recipes/{name}_best.yaml", "w").write(header + dump_yaml(config))
print(f"trial {best.number} val {best.value:.4f} ({len(finished)} finished) -> recipes/{name}_best.yaml")
