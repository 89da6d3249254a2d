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


#: bench_held's rows for relay paths the proxy no longer has (docs/design.md,
#: "Relay paths"): still in the results as the figures they were replaced for.
RETIRED = ("wfpredirect --relay splice",)


def held_label(name: str) -> str:
    return f"{name} (retired)" if name in RETIRED else name


def plot_held(result: dict[str, Any]) -> Any:
    """bench_held: descriptors, kernel memory above direct and RSS per held
    connection, a row of panels per metric and a column per count, a bar per
    candidate (a skipped one says so)."""
    counts = result["counts"]
    panels = [
        ("descriptors per connection", "descriptors", "{:.2f}"),
        ("kernel KiB per connection, above direct", "kernel_kib", "{:.1f}"),
        ("RSS KiB per connection", "rss_kib", "{:.1f}"),
    ]
    candidates = max(len(rows) - 1 for rows in counts.values())  # less "direct"
    figure, grid = plt.subplots(
        len(panels),
        len(counts),
        figsize=(6.5 * len(counts), 1.0 + 0.3 * candidates * len(panels)),
        sharex="row",  # the counts side by side on one scale
        squeeze=False,
    )
    for column, (count, rows) in enumerate(counts.items()):
        names = [name for name in rows if name != "direct"]
        positions = range(len(names))
        for axes, (title, metric, form) in zip(grid[:, column], panels, strict=True):
            values = [rows[name].get(metric, 0) for name in names]
            colours = ["tab:gray" if name in RETIRED else proxy_colour(name) for name in names]
            axes.barh(positions, values, color=colours)
            axes.set_yticks(list(positions), [held_label(name) for name in names], fontsize=8)
            axes.invert_yaxis()
            axes.set_title(f"{title} ({int(count):,} held)", fontsize=10)
            for position, name, number in zip(positions, names, values, strict=True):
                text = " skipped" if "skipped" in rows[name] else " " + form.format(number)
                axes.text(number, position, text, va="center", fontsize=8)
            axes.margins(x=0.25)
    hold = result["hold_seconds"]
    return figure, (
        f"bench_held (linux): per held connection, lower is better; hold {hold:g} s, "
        "each answered before and after"
    )


#: The benchmarks that have a chart (bench_windows_calls counts calls: a table).
CHARTED = ("bench_calls", "callgrind_calls", "bench_proxy", "bench_held")


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
    if result["benchmark"] == "bench_held":
        figure, title = plot_held(result)
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
        result = json.loads(path.read_text())
        # service_scenarios writes a list of rows, with no "benchmark".
        if not isinstance(result, dict) or result.get("benchmark") not in CHARTED:
            print(f"{path}: a table only, no chart")
            continue
        print(f"{path} -> {plot(path)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
