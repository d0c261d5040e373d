"""Merges results tables written by ``cicy-search results`` from different MLflow stores (machines, sessions) into
one: each (row, train fraction) cell comes from the first table that has it trained (seeds > 0), rows in the order
of the results file. The matrix-only rows were retrained in other sessions' stores than the rest of the table.

    PYTHONPATH=$PWD .venv/bin/python studies/runs/merge_results_tables.py recipes/results.yaml bench/results/results_table \\
        bench/results/results_table.json bench/results/matrix_family_results_table.json bench/results/matrix_h21_results_table.json \\
        bench/results/matrix_long_results_table.json bench/results/matrix_mlp_results_table.json \\
        bench/results/matrix_fit_results_table.json bench/results/matrix_wide_results_table.json \\
        bench/results/matrix_ensemble_results_table.json bench/results/matrix_ensemble5_results_table.json \\
        bench/results/matrix_reg_results_table.json bench/results/matrix_reg_ens3_results_table.json \\
        bench/results/matrix_offset_results_table.json
"""

import json
import sys
from pathlib import Path

from cicy_search.experiments.results import load_table, write


def merge(table_file: str, out: str, tables: list[str]) -> list[dict]:
    cells: dict[tuple[str, float], dict] = {}
    for path in tables:
        for record in json.loads(Path(path).read_text()):
            key = (record["row"], record["fraction"])
            if record["seeds"] and key not in cells:
                cells[key] = record
    table = load_table(table_file)
    records = []
    for row in table["rows"]:
        for fraction in row["fractions"]:
            if (row["name"], fraction) in cells:  # the row's note as the results file says it now
                records.append({**cells[(row["name"], fraction)], "note": row["note"]})
    write(records, out)
    return records


if __name__ == "__main__":
    for r in merge(sys.argv[1], sys.argv[2], sys.argv[3:]):
        print(r["row"], r["fraction"], r["seeds"])
