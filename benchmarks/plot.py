"""Renders the benchmark tables (benchmarks/results/*.json) as PNG bar
charts beside them, for the performance page (docs/performance.md).

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
    "wfpredirect proxy": "tab:blue",
    "stdlib relay": "tab:orange",
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


def proxy_colour(name: str) -> str:
    if name.startswith("haproxy"):
        return "tab:green"
    if name.startswith("wfpredirect"):
        return "tab:blue"
    return COLOURS.get(name, "tab:orange")


def plot_proxy(result: dict[str, Any]) -> Any:
    """bench_proxy: connections/s, MiB/s, p50 latency and CPU per connection,
    one panel each, a bar per candidate."""
    candidates = result["candidates"]
    panels = [
        ("connections per second, higher is better", "connections_per_second"),
        ("MiB per second (bulk), higher is better", "mib_per_second"),
        ("p50 latency of one connection (us), lower is better", "p50_us"),
        ("proxy CPU per connection (us), lower is better", "cpu_us_per_connection"),
    ]
    figure, grid = plt.subplots(len(panels), 1, figsize=(8, 1.0 + 0.3 * len(candidates) * 4))
    for axes, (title, metric) in zip(grid, panels, strict=True):
        names = list(candidates)
        values = [candidates[name][metric] for name in names]
        positions = range(len(names))
        axes.barh(positions, values, color=[proxy_colour(name) for name in names])
        axes.set_yticks(list(positions), names, fontsize=8)
        axes.invert_yaxis()
        axes.set_title(title, fontsize=10)
        for position, number in zip(positions, values, strict=True):
            axes.text(number, position, f" {number:,.0f}", va="center", fontsize=8)
        axes.margins(x=0.25)
    rounds = result["options"]["rounds"]
    return figure, f"bench_proxy (linux): reference proxy, HAProxy, stdlib relay; {rounds} rounds"


#: The benchmarks that have a chart (bench_windows_calls counts calls: a table).
CHARTED = ("bench_calls", "callgrind_calls", "bench_proxy")


def plot(path: Path) -> Path:
    result = json.loads(path.read_text())
    info = result["machine"]
    if result["benchmark"] == "bench_proxy":
        if "mib_per_second" not in next(iter(result["candidates"].values()), {}):
            # Written before bench_proxy.py measured HAProxy: its chart stays.
            print(f"{path}: an earlier bench_proxy.py's layout; rerun it with --write")
            return path.with_suffix(".png")
        figure, title = plot_proxy(result)
        return save(figure, title, info, path)
    operations = result["operations"]
    figure, grid = plt.subplots(len(operations), 1, figsize=(8, 2.1 * len(operations)))
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
    return save(figure, title, info, path)


def save(figure: Any, title: str, info: dict[str, Any], path: Path) -> Path:
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
        if json.loads(path.read_text())["benchmark"] not in CHARTED:
            print(f"{path}: a table only, no chart")
            continue
        print(f"{path} -> {plot(path)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
