"""The pure parts of benchmarks/bench_proxy.py: which reference-proxy
variants `wfpredirect proxy --help` allows, HAProxy's configuration and the
namespace's rules, and the figures (percentiles, medians, per-round ratios,
the targets, the table). The measurement itself is a benchmark, run by
tests/integration/test_bench_proxy.py only as a smoke run."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from types import ModuleType

import pytest

from support import project_file


@pytest.fixture(scope="module")
def bench() -> Iterator[ModuleType]:
    path = project_file("benchmarks/bench_proxy.py")
    before = set(sys.modules)
    sys.path.insert(0, str(path.parent))  # its neighbours: machine, redirect_namespace
    try:
        spec = importlib.util.spec_from_file_location("bench_proxy", path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules["bench_proxy"] = module  # for its dataclasses
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.path.remove(str(path.parent))
        for name in ("bench_proxy", "machine", "redirect_namespace"):
            if name not in before:
                sys.modules.pop(name, None)


# What argparse prints for the options of a later `wfpredirect proxy`.
LATER_HELP = """usage: wfpredirect proxy [-h] --listen HOST:PORT [--relay {splice,protocol,streams}]
  --relay {splice,protocol,streams}
  --workers N           worker processes (SO_REUSEPORT)
  --transparent
"""


def test_a_variant_runs_when_the_help_names_its_flags_and_words(bench: ModuleType) -> None:
    assert bench.unsupported([], LATER_HELP) == ""
    assert bench.unsupported(["--relay", "splice"], LATER_HELP) == ""
    assert bench.unsupported(["--relay", "splice", "--workers", "2"], LATER_HELP) == ""
    assert bench.unsupported(["--loop", "uvloop"], LATER_HELP) == (
        "`wfpredirect proxy` has no --loop"
    )
    assert bench.unsupported(["--relay", "zerocopy"], LATER_HELP) == (
        "`wfpredirect proxy --help` does not offer 'zerocopy'"
    )
    # A flag is matched whole: --work is not --workers.
    assert bench.unsupported(["--work", "2"], LATER_HELP) == "`wfpredirect proxy` has no --work"


def test_the_candidates_their_ports_threads_and_reasons(bench: ModuleType) -> None:
    found = bench.candidates(LATER_HELP, "haproxy is not installed")
    names = [candidate.name for candidate in found]
    assert names == [name for name, _ in bench.PROXY_VARIANTS] + [bench.STDLIB] + [
        name for name, _, _ in bench.HAPROXY_VARIANTS
    ]
    assert [c.original_port for c in found] == list(range(9000, 9000 + len(found)))
    assert [c.listen_port for c in found] == list(range(16000, 16000 + len(found)))
    by_name = {candidate.name: candidate for candidate in found}
    assert by_name["wfpredirect"].skipped == ""
    assert by_name["wfpredirect --workers 2"].threads == 2
    assert by_name["wfpredirect --workers 2"].skipped == ""
    assert by_name["wfpredirect --loop uvloop"].skipped == "`wfpredirect proxy` has no --loop"
    assert by_name[bench.STDLIB].skipped == ""
    assert by_name["haproxy splice-auto nbthread 2"].skipped == "haproxy is not installed"
    assert [by_name[name].splice for name, _, _ in bench.HAPROXY_VARIANTS] == [
        "",
        "auto",
        "always",
        "",
        "auto",
        "always",
    ]
    assert [by_name[name].threads for name, _, _ in bench.HAPROXY_VARIANTS] == [1, 1, 1, 2, 2, 2]


def test_haproxy_is_configured_as_a_user_would(bench: ModuleType) -> None:
    candidate = bench.Candidate(
        "haproxy splice-auto nbthread 2", "haproxy", splice="auto", threads=2
    )
    candidate.listen_port = 16010
    assert bench.haproxy_config(candidate, "haproxy", "haproxy") == (
        "global\n"
        "    nbthread 2\n"
        "    maxconn 4096\n"
        "    user haproxy\n"
        "    group haproxy\n"
        "\n"
        "defaults\n"
        "    mode tcp\n"
        "    timeout connect 5s\n"
        "    timeout client 30s\n"
        "    timeout server 30s\n"
        "    option splice-auto\n"
        "\n"
        "frontend redirected\n"
        "    bind 127.0.0.1:16010\n"
        "    default_backend original_destination\n"
        "\n"
        "backend original_destination\n"
        "    # 0.0.0.0:0: the address and port the client dialed (SO_ORIGINAL_DST)\n"
        "    server original 0.0.0.0:0\n"
    )
    candidate.splice = "always"
    assert (
        "    timeout server 30s\n    option splice-request\n    option splice-response\n\n"
        in bench.haproxy_config(candidate, "nobody", "nogroup")
    )
    candidate.splice = ""
    assert "splice" not in bench.haproxy_config(candidate, "nobody", "nogroup")


def test_the_rules_exempt_the_loop_mark_and_haproxys_user(bench: ModuleType) -> None:
    found = bench.candidates(LATER_HELP, "")[:2]
    assert bench.nft_rules(found, 102, (9099, 16099)) == (
        "table ip wfpr_bench_proxy {\n"
        "  chain out {\n"
        "    type nat hook output priority -100;\n"
        "    meta mark & 0x40 == 0x40 return\n"
        "    meta skuid 102 return\n"
        "    ip daddr 127.0.0.2 tcp dport 9000 redirect to :16000\n"
        "    ip daddr 127.0.0.2 tcp dport 9001 redirect to :16001\n"
        "    ip daddr 127.0.0.2 tcp dport 9099 redirect to :16099\n"
        "  }\n"
        "}\n"
    )
    assert "skuid" not in bench.nft_rules(found, None, (9099, 16099))


def test_percentiles_by_nearest_rank(bench: ModuleType) -> None:
    samples = [float(value) for value in range(100, 0, -1)]  # 100 .. 1, unordered
    assert bench.percentile(samples, 0.50) == 50.0
    assert bench.percentile(samples, 0.99) == 99.0
    assert bench.percentile([7.0], 0.99) == 7.0
    assert bench.percentile([1.0, 2.0, 3.0], 0.5) == 2.0


def sample(connections: float, mib: float, p50: float, cpu: float) -> dict[str, float]:
    return {
        "connections_per_second": connections,
        "mib_per_second": mib,
        "p50_us": p50,
        "p99_us": 2 * p50,
        "cpu_us_per_connection": cpu,
        "cpu_seconds_per_gib": 1.0,
        "client_cpu_us_per_connection": 40.0,
        "origin_cpu_us_per_connection": 20.0,
    }


def test_medians_and_ratios_pair_the_rounds(bench: ModuleType) -> None:
    mine = [sample(100, 10, 300, 200), sample(300, 30, 100, 100), sample(200, 20, 200, 150)]
    # The anchor's rounds drift: per-round ratios 0.5, 0.5, 0.4 (median 0.5),
    # where the ratio of the medians would be 200/500 = 0.4.
    theirs = [sample(200, 20, 100, 50), sample(600, 60, 50, 50), sample(500, 40, 100, 75)]
    assert bench.medians({"a": mine})["a"]["connections_per_second"] == 200
    assert bench.medians({"a": mine})["a"]["p50_us"] == 200
    assert bench.paired_ratio(mine, theirs, "connections_per_second") == 0.5
    assert bench.paired_ratio(mine, theirs, "p50_us") == 2.0


def test_targets_against_haproxy_with_as_many_threads(bench: ModuleType) -> None:
    found = bench.candidates(LATER_HELP, "")
    rounds = {
        "wfpredirect": [sample(4000, 700, 300, 200)],
        "wfpredirect --workers 2": [sample(9000, 2100, 150, 100)],
        "haproxy": [sample(10000, 1000, 150, 80)],
        # splice-auto did not splice; splice did: the better one is the anchor.
        "haproxy splice-auto": [sample(10000, 1000, 150, 80)],
        "haproxy splice": [sample(10000, 2000, 150, 80)],
        "haproxy nbthread 2": [sample(12000, 1000, 150, 100)],
        "haproxy splice-auto nbthread 2": [sample(12000, 2000, 150, 100)],
        # (haproxy splice nbthread 2 did not run: the other one is the anchor)
    }
    targets = bench.evaluate_targets(found, rounds)
    assert set(targets) == {"wfpredirect", "wfpredirect --workers 2"}
    one = targets["wfpredirect"]
    assert one["bulk"] == {
        "anchor": "haproxy splice-auto or haproxy splice",
        "ratio": 0.35,
        "limit": 1.0,
        "passed": False,
    }
    assert one["p50"] == {"anchor": "haproxy", "ratio": 2.0, "limit": 1.6, "passed": False}
    assert one["cpu"] == {"anchor": "haproxy", "ratio": 2.5, "limit": 2.0, "passed": False}
    assert one["connections"] == {"anchor": "haproxy", "ratio": 0.4, "limit": 0.5, "passed": False}
    two = targets["wfpredirect --workers 2"]
    assert two["bulk"] == {
        "anchor": "haproxy splice-auto nbthread 2",
        "ratio": 1.05,
        "limit": 1.0,
        "passed": True,
    }
    assert two["p50"]["passed"] and two["p50"]["ratio"] == 1.0
    assert two["cpu"] == {
        "anchor": "haproxy nbthread 2",
        "ratio": 1.0,
        "limit": 2.0,
        "passed": True,
    }
    assert two["connections"] == {
        "anchor": "haproxy nbthread 2",
        "ratio": 0.75,
        "limit": 0.7,
        "passed": True,
    }


def test_without_haproxy_the_targets_have_no_anchor(bench: ModuleType) -> None:
    found = bench.candidates("", "haproxy is not installed")
    targets = bench.evaluate_targets(found, {"wfpredirect": [sample(4000, 700, 300, 200)]})
    assert targets == {
        "wfpredirect": {
            key: {"anchor": "", "ratio": None, "limit": limit, "passed": None}
            for key, limit in (("bulk", 1.0), ("p50", 1.6), ("cpu", 2.0), ("connections", 0.5))
        }
    }


def test_the_table(bench: ModuleType) -> None:
    found = bench.candidates("", "haproxy is not installed")
    rounds = {
        "wfpredirect": [sample(4049, 715, 358, 229)],
        bench.STDLIB: [sample(4697, 700, 300, 200)],
    }
    result = {
        "machine": {"kernel": "6.1", "cpu": "a CPU", "cpus": 2, "python": "3.11.7"},
        "haproxy_version": "",
        "options": {
            "rounds": 1,
            "concurrency": 32,
            "seconds": 3.0,
            "streams": 4,
            "transfer_mib": 256,
            "latency_count": 2000,
        },
        "rounds": [{"load_average": (0.5, 0.25, 1.0), "order": ["wfpredirect", bench.STDLIB]}],
        "candidates": bench.medians(rounds),
        "skipped": {c.name: c.skipped for c in found if c.skipped},
        "targets": bench.evaluate_targets(found, rounds),
        "stdlib_ratios": {
            metric: bench.paired_ratio(rounds["wfpredirect"], rounds[bench.STDLIB], metric)
            for metric in ("connections_per_second", "mib_per_second")
        },
        "library_us_per_connection": 3.58,
    }
    lines = bench.render(result).splitlines()
    assert lines[1] == (
        "6.1, a CPU, 2 CPUs, CPython 3.11.7, no HAProxy; medians of 1 rounds; 32 clients x "
        "100 bytes each way for 3.0 s, 4 x 256 MiB, 2000 connections one at a time"
    )
    assert "round 1: load average 0.50, 0.25, 1.00; order: wfpredirect, stdlib relay" in lines
    row = next(line for line in lines if line.startswith("wfpredirect "))
    assert row.split() == ["wfpredirect", "4,049", "715", "358", "716", "229", "1.00"]
    assert f"{'haproxy':44} skipped: haproxy is not installed" in lines
    assert lines[-3] == (
        "wfpredirect / stdlib relay (median per-round ratio): conn/s 0.86, MiB/s 1.02"
    )
    assert lines[-1] == (
        "library calls per connection (query_redirect_info + set_redirect_records): "
        "3.6 us = 1.00 % of one connection's p50 through wfpredirect (358 us)"
    )
    targets = next(line for line in lines if line.startswith("wfpredirect ") and "n/a" in line)
    assert targets.count("n/a (no anchor)") == 4
