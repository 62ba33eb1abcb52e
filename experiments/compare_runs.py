"""Two ``make exp-flow`` runs side by side: each configuration's mean EPE per arm in both runs, their difference,
and the largest difference over every number of ``results.json`` (per layer, timestep, arm; MSE; curves).

    python experiments/compare_runs.py runs/exp-flow/results.json experiments/exp_flow_results.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from exp_flow import mean_epe  # noqa: E402  (beside this file)


def numbers(value, path: str = ""):
    """(path, float) of every number in a results.json subtree."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield from numbers(item, f"{path}/{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from numbers(item, f"{path}[{index}]")
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        yield path, float(value)


def compare(first: dict, second: dict, names: tuple[str, str]) -> str:
    lines = ["| | " + " | ".join(names) + " |", "|---|---|---|"]
    for key in ("torch", "cpu_model", "aten_cpu_capability", "env"):
        lines.append(f"| {key} | " + " | ".join(str(r.get("machine", {}).get(key, "-")) for r in (first, second))
                     + " |")
    lines.append("| threads per worker | " + " | ".join(str(r["args"]["threads"]) for r in (first, second)) + " |")
    lines.append("| data sha256 | " + " | ".join(r.get("data_sha256", "-")[:16] for r in (first, second)) + " |")
    runs = {(r["seed"], r["shift_size"]): r for r in second["runs"]}
    lines += ["", f"| seed | shift | arm | EPE {names[0]} | EPE {names[1]} | difference |", "|---|---|---|---|---|---|"]
    largest, where = 0.0, "-"
    for run in first["runs"]:
        other = runs.get((run["seed"], run["shift_size"]))
        if other is None:
            continue
        for arm in run["arms"]:
            if arm in other["arms"]:
                a, b = mean_epe(run["arms"][arm]), mean_epe(other["arms"][arm])
                lines.append(f"| {run['seed']} | {run['shift_size']:g} | {arm} | {a:.4f} | {b:.4f} | {b - a:+.4f} |")
        pairs = dict(numbers({"arms": other["arms"], "curves": other["curves"]}))
        for path, value in numbers({"arms": run["arms"], "curves": run["curves"]}):
            if path in pairs and abs(pairs[path] - value) > largest:
                largest, where = abs(pairs[path] - value), f"seed {run['seed']}, shift {run['shift_size']:g}: {path}"
    lines += ["", f"Largest difference over every EPE, MSE and curve number: {largest:.3g} ({where})."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("first", type=Path)
    parser.add_argument("second", type=Path)
    parser.add_argument("--names", nargs=2, default=["first", "second"])
    args = parser.parse_args(argv)
    print(compare(json.loads(args.first.read_text()), json.loads(args.second.read_text()), tuple(args.names)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
