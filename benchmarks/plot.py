"""Renders the benchmark tables (benchmarks/results/*.json) as PNG bar
charts beside them, for the README.

Usage: python benchmarks/plot.py [RESULTS_DIRECTORY]    (needs matplotlib)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt

RESULTS = Path(__file__).resolve().parent / "results"
LIBRARY = "wfpredirect"
FLOOR = "floor (C loop)"
COLOURS = {
    LIBRARY: "tab:blue",
    "C-API reference": "tab:green",
    FLOOR: "tab:gray",
    "stdlib": "tab:orange",
    "ctypes": "tab:red",
}


def bars(axes: Any, operation: str, rows: dict[str, Any], value: str, error: bool) -> None:
    names = list(rows)
    values = [rows[name][value] for name in names]
    errors = None
    if error:
        errors = [
            [rows[name][value] - rows[name]["q1"] for name in names],
            [rows[name]["q3"] - rows[name][value] for name in names],
        ]
    positions = range(len(names))
    axes.barh(
        positions,
        values,
        xerr=errors,
        capsize=3,
        color=[COLOURS.get(name, "tab:purple") for name in names],
    )
    axes.set_yticks(list(positions), names)
    axes.invert_yaxis()
    axes.set_title(operation, fontsize=10)
    for position, number in zip(positions, values, strict=True):
        axes.text(number, position, f" {number:,.0f}", va="center", fontsize=8)
    if FLOOR in rows:  # everything right of the line is overhead above the floor
        axes.axvline(rows[FLOOR][value], color="black", linestyle="--", linewidth=1)
    axes.margins(x=0.25)


def plot(path: Path) -> Path:
    result = json.loads(path.read_text())
    operations = result["operations"]
    figure, grid = plt.subplots(len(operations), 1, figsize=(8, 2.1 * len(operations)))
    info = result["machine"]
    if result["benchmark"] == "bench_calls":
        for axes, (operation, entry) in zip(grid, operations.items(), strict=True):
            bars(axes, operation, entry["candidates"], "ns_per_call", error=True)
        grid[-1].set_xlabel("ns per call (median, bars: interquartile range)")
        title = f"bench_calls ({result['platform']}): ns per call, lower is better"
    else:
        for axes, (operation, rows) in zip(grid, operations.items(), strict=True):
            bars(axes, operation, rows, "instructions_per_call", error=False)
        grid[-1].set_xlabel("user-space instructions per call (callgrind)")
        title = "callgrind_calls (linux): instructions per call, lower is better"
    figure.suptitle(
        f"{title}\n{info['system']} {info['kernel']}, {info['cpu']}, {info['cpus']} CPUs, "
        f"{info['implementation']} {info['python']}",
        fontsize=10,
    )
    figure.tight_layout()
    output = path.with_suffix(".png")
    figure.savefig(output, dpi=100)
    plt.close(figure)
    return output


def main() -> int:
    directory = Path(sys.argv[1]) if len(sys.argv) > 1 else RESULTS
    for path in sorted(directory.glob("*.json")):
        print(f"{path} -> {plot(path)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
