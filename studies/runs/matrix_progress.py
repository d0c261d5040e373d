"""Writes the trial table of studies/matrix_h11.yaml's journal into bench/results/matrix_study_trials.md.

Run from the worktree: PYTHONPATH=$PWD python studies/runs/matrix_progress.py [study_file journal out]
(the family study: studies/matrix_h11_family.yaml studies/runs/matrix_h11_family.journal
bench/results/matrix_family_trials.md; its table counts trials and the best per family too).
Reads the study through the project's own loader; only reads the storage.
"""

import sys
import warnings

warnings.filterwarnings("ignore")
from cicy_search.search import study as study_mod  # noqa: E402

study_file, journal, out = (sys.argv[1:4] if len(sys.argv) > 3 else
                            ("studies/matrix_h11.yaml", "studies/runs/matrix_h11.journal", "bench/results/matrix_study_trials.md"))
name = study_file.rsplit("/", 1)[-1].removesuffix(".yaml")
s = study_mod.load(name, storage=f"journal:{journal}")
trials = s.get_trials(deepcopy=False)
short = {"model.": "", "train.": "", "learning_rate": "lr", "head_width": "head_w", "lr_schedule": "sched",
         "batch_size": "batch", "activation": "act", "optimizer": "opt"}


def key(k):
    for a, b in short.items():
        k = k.replace(a, b)
    return k


lines = [f"# {name}: trials ({len(trials)})", "",
         "| # | state | val_accuracy | epochs run | seconds | params |", "|---|---|---|---|---|---|"]
for t in trials:
    value = t.value if t.value is not None else (max(t.intermediate_values.values()) if t.intermediate_values else None)
    secs = (t.datetime_complete - t.datetime_start).total_seconds() if t.datetime_complete and t.datetime_start else None
    params = ", ".join(f"{key(k)}={v:.2g}" if isinstance(v, float) else f"{key(k)}={v}" for k, v in t.params.items())
    lines.append(f"| {t.number} | {t.state.name} | {'' if value is None else f'{value:.4f}'} | {len(t.intermediate_values)} | "
                 f"{'' if secs is None else f'{secs:.0f}'} | {params} |")
done = [t for t in trials if t.value is not None and t.state.name == "COMPLETE"]
if done:
    b = max(done, key=lambda t: t.value)
    lines += ["", f"Best complete trial: {b.number}, val_accuracy {b.value:.4f}."]
families = sorted({t.params["model.family"] for t in trials if "model.family" in t.params})
for f in families:
    mine = [t for t in trials if t.params.get("model.family") == f]
    states = {s: sum(t.state.name == s for t in mine) for s in ("COMPLETE", "PRUNED", "RUNNING", "FAIL")}
    best = max((t for t in mine if t.state.name == "COMPLETE"), key=lambda t: t.value, default=None)
    lines.append(f"- {f}: {len(mine)} trials ({', '.join(f'{n} {s.lower()}' for s, n in states.items() if n)})"
                 + (f"; best complete: trial {best.number}, {best.value:.4f}" if best else ""))
open(out, "w").write("\n".join(lines) + "\n")
print("\n".join(lines[-3:]))
