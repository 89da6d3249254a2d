"""The command line's argument handling: addresses, marks, usage errors."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from support import NEUTRAL_DIRECTORY, linux_only, project_file
from wfpredirect.cli._proxy import ProxySettings, format_address, parse_address


@pytest.mark.parametrize(
    ("text", "address"),
    [
        ("127.0.0.1:15001", ("127.0.0.1", 15001)),
        ("[::1]:15001", ("::1", 15001)),
        ("0.0.0.0:0", ("0.0.0.0", 0)),
    ],
)
def test_parse_address(text: str, address: tuple[str, int]) -> None:
    assert parse_address(text) == address


@pytest.mark.parametrize("text", ["15001", ":15001", "127.0.0.1:", "127.0.0.1:x", "h:70000"])
def test_parse_address_rejects(text: str) -> None:
    with pytest.raises(ValueError) as raised:
        parse_address(text)
    assert str(raised.value) == f"{text!r} is not HOST:PORT"


def test_format_address() -> None:
    assert format_address(("127.0.0.2", 8080)) == "127.0.0.2:8080"
    assert format_address(("::1", 8080, 0, 0)) == "[::1]:8080"


def wfpredirect_command(
    *arguments: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "wfpredirect", *arguments],
        capture_output=True,
        text=True,
        check=False,
        cwd=NEUTRAL_DIRECTORY,
        env=env,
        timeout=30,
    )


def test_a_bad_mark_is_a_usage_error() -> None:
    result = wfpredirect_command("proxy", "--listen", "127.0.0.1:0", "--loop-mark", "0x1g")
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1] == (
        "wfpredirect proxy: error: argument --loop-mark: '0x1g' is not a decimal or 0x-hex number"
    )


@linux_only
def test_proxy_refuses_to_start_with_marks_that_cannot_work() -> None:
    result = wfpredirect_command(
        "proxy", "--listen", "127.0.0.1:0", "--loop-mark", "0x100", "--mark-mask", "0xf0"
    )
    assert (result.returncode, result.stdout, result.stderr) == (
        2,
        "",
        "wfpredirect proxy: --loop-mark 0x100 is not inside --mark-mask 0xf0: "
        "the loop mark must only use bits of the mark mask\n",
    )


def test_no_command_prints_the_help_as_a_usage_error() -> None:
    result = wfpredirect_command()
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr.startswith("usage: wfpredirect [-h] [--version] COMMAND ...\n")
    assert "examples:\n" in result.stderr


def test_version() -> None:
    import wfpredirect

    result = wfpredirect_command("--version")
    assert (result.returncode, result.stdout, result.stderr) == (
        0,
        f"wfpredirect {wfpredirect.__version__}\n",
        "",
    )


def test_every_example_of_the_help_is_a_valid_command() -> None:
    """The examples `wfpredirect --help` shows parse as they are written."""
    from wfpredirect.cli._main import EXAMPLES, parser

    commands = [
        line.strip().split("  ")[0].split()
        for line in EXAMPLES.splitlines()
        if line.startswith("  wfpredirect ")
    ]
    assert [command[:2] for command in commands] == [
        ["wfpredirect", "demo"],
        ["wfpredirect", "doctor"],
        ["wfpredirect", "proxy"],
        ["wfpredirect", "proxy"],
        ["wfpredirect", "proxy"],
        ["wfpredirect", "proxy"],
    ]
    for command in commands:
        parser().parse_args(command[1:])


def test_quiet_and_log_level_together_are_a_usage_error() -> None:
    result = wfpredirect_command(
        "proxy", "--listen", "127.0.0.1:0", "--quiet", "--log-level", "debug"
    )
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1] == (
        "wfpredirect proxy: error: argument --log-level: not allowed with argument --quiet/-q"
    )


@pytest.mark.parametrize(
    ("arguments", "level", "form"),
    [
        ([], logging.INFO, "text"),
        (["--quiet"], logging.WARNING, "text"),
        (["-q", "--log-format", "json"], logging.WARNING, "json"),
        (["--log-level", "debug"], logging.DEBUG, "text"),
        (["--log-level", "warning", "--log-format", "text"], logging.WARNING, "text"),
    ],
)
def test_log_options_reach_the_proxy_settings(
    monkeypatch: pytest.MonkeyPatch, arguments: list[str], level: int, form: str
) -> None:
    from wfpredirect.cli import _main

    given: list[ProxySettings] = []
    monkeypatch.setattr(_main, "run_proxy", lambda settings: given.append(settings) or 0)
    assert _main.main(["proxy", "--listen", "127.0.0.1:0", *arguments]) == 0
    assert [(settings.log_level, settings.log_format) for settings in given] == [(level, form)]


def test_workers_must_be_a_number_of_processes() -> None:
    result = wfpredirect_command("proxy", "--listen", "127.0.0.1:15001", "--workers", "0")
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1] == (
        "wfpredirect proxy: error: argument --workers: '0' is not a number of processes (1 to 64)"
    )


def test_an_unknown_relay_path_is_a_usage_error() -> None:
    result = wfpredirect_command("proxy", "--listen", "127.0.0.1:15001", "--relay", "sendfile")
    assert result.returncode == 2
    # Newer argparse (the 3.13 of the Windows lane) lists the choices unquoted.
    assert result.stderr.splitlines()[-1] in {
        "wfpredirect proxy: error: argument --relay: invalid choice: 'sendfile' "
        "(choose from 'auto', 'protocol', 'streams', 'native')",
        "wfpredirect proxy: error: argument --relay: invalid choice: 'sendfile' "
        "(choose from auto, protocol, streams, native)",
    }


def test_a_relay_path_this_platform_lacks_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    from wfpredirect.cli import _relay
    from wfpredirect.cli._platform import this_platform

    monkeypatch.setattr(this_platform, "relay_paths", ("streams", "protocol"))
    assert _relay.choose_relay_path("auto") == "streams"
    assert _relay.choose_relay_path("protocol") == "protocol"
    with pytest.raises(ValueError) as raised:
        _relay.choose_relay_path("native")
    assert str(raised.value) == (
        "--relay native is not available here: this platform has streams, protocol (auto: streams)"
    )


def test_auto_on_windows_is_the_path_the_proactor_benchmark_found_cheaper(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Windows' ``--relay auto`` is the path benchmarks/bench_windows_relay.py
    measured cheaper on the Proactor loop: less of the relay process's CPU
    per MiB (the median of the rounds' protocol/streams ratios, in the
    shipped results; the other timings were within the runs' noise, see
    docs/performance.md). Results that turn it around fail here until the
    choice is made again."""
    from wfpredirect.cli import _platform_winsock, _relay
    from wfpredirect.cli._platform import this_platform

    measured = json.loads(project_file("benchmarks/results/windows_relay-wine.json").read_text())
    ratios = measured["summary"]["protocol_vs_streams"]
    cheaper = "protocol" if ratios["cpu_ms_per_mib"] < 1 else "streams"
    assert cheaper == "protocol", ratios
    assert _platform_winsock.relay_paths == ("protocol", "streams")
    monkeypatch.setattr(this_platform, "relay_paths", _platform_winsock.relay_paths)
    assert _relay.choose_relay_path("auto") == "protocol"
    assert _relay.choose_relay_path("streams") == "streams"


@linux_only
def test_workers_need_a_fixed_port() -> None:
    result = wfpredirect_command("proxy", "--listen", "127.0.0.1:0", "--workers", "2")
    assert (result.returncode, result.stdout, result.stderr) == (
        2,
        "",
        "wfpredirect proxy: --workers 2 needs a fixed port (each worker binds the same "
        "address with SO_REUSEPORT)\n",
    )


def test_uvloop_when_it_is_not_installed(tmp_path: Path) -> None:
    """A uvloop that cannot be imported: said before anything listens."""
    package = tmp_path / "uvloop"
    package.mkdir()
    (package / "__init__.py").write_text("raise ImportError('no uvloop here')\n")
    environment = {**os.environ, "PYTHONPATH": str(tmp_path)}
    result = wfpredirect_command(
        "proxy", "--listen", "127.0.0.1:0", "--loop", "uvloop", env=environment
    )
    assert (result.returncode, result.stdout, result.stderr) == (
        2,
        "",
        "wfpredirect proxy: --loop uvloop: uvloop is not installed "
        "(python -m pip install uvloop)\n",
    )


@pytest.mark.parametrize(("arguments", "keep"), [([], False), (["--keep-client-address"], True)])
def test_keep_client_address_reaches_the_proxy_settings(
    monkeypatch: pytest.MonkeyPatch, arguments: list[str], keep: bool
) -> None:
    from wfpredirect.cli import _main

    given: list[ProxySettings] = []
    monkeypatch.setattr(_main, "run_proxy", lambda settings: given.append(settings) or 0)
    assert _main.main(["proxy", "--listen", "127.0.0.1:0", *arguments]) == 0
    assert [settings.keep_client_address for settings in given] == [keep]


@pytest.mark.parametrize(
    ("option", "value", "allowed"),
    [
        ("--grace", "nan", "a number of seconds (0 to 3600)"),
        ("--grace", "-1", "a number of seconds (0 to 3600)"),
        ("--grace", "inf", "a number of seconds (0 to 3600)"),
        ("--connect-timeout", "0", "a number of seconds (0.01 to 3600)"),
        ("--connect-timeout", "-1", "a number of seconds (0.01 to 3600)"),
        ("--connect-timeout", "nan", "a number of seconds (0.01 to 3600)"),
        ("--connect-timeout", "inf", "a number of seconds (0.01 to 3600)"),
        ("--connect-timeout", "1e309", "a number of seconds (0.01 to 3600)"),
        ("--udp-idle-timeout", "0", "a number of seconds (0.1 to 86400)"),
        ("--udp-idle-timeout", "-1", "a number of seconds (0.1 to 86400)"),
        ("--udp-idle-timeout", "nan", "a number of seconds (0.1 to 86400)"),
        ("--udp-idle-timeout", "1e-9", "a number of seconds (0.1 to 86400)"),
        ("--idle-timeout", "0", "a number of seconds (0.1 to 604800)"),
        ("--idle-timeout", "x", "a number of seconds (0.1 to 604800)"),
        ("--summary-interval", "-1", "a number of seconds (0, or 0.1 to 86400)"),
        ("--summary-interval", "0.01", "a number of seconds (0, or 0.1 to 86400)"),
        ("--backlog", "0", "a listen backlog (1 to 65535)"),
        ("--backlog", "-1", "a listen backlog (1 to 65535)"),
        ("--backlog", "2147483648", "a listen backlog (1 to 65535)"),
        ("--workers", "100000", "a number of processes (1 to 64)"),
        ("--max-connections", "0", "connections held at once; at the cap accepting pauses "
         "(1 to 1000000)"),
        ("--max-udp-flows", "-5", "UDP flows at once; beyond it new flows are dropped and "
         "counted (1 to 1000000)"),
    ],
)  # fmt: skip
def test_a_number_out_of_its_range_is_a_usage_error(option: str, value: str, allowed: str) -> None:
    """Exit 2 with one line naming the option and its range, before anything starts."""
    result = wfpredirect_command("proxy", "--listen", "127.0.0.1:0", f"{option}={value}")
    assert (result.returncode, result.stdout, result.stderr) == (
        2,
        "",
        f"wfpredirect proxy: error: argument {option}: {value!r} is not {allowed}\n",
    )


@pytest.mark.parametrize(
    ("arguments", "fields"),
    [
        ([], {"idle_timeout": 3600.0, "max_connections": None, "max_udp_flows": None}),
        (
            ["--idle-timeout", "30", "--max-connections", "500", "--max-udp-flows", "9"],
            {"idle_timeout": 30.0, "max_connections": 500, "max_udp_flows": 9},
        ),
        (["--summary-interval", "0", "--grace", "0"], {"summary_interval": 0.0, "grace": 0.0}),
    ],
)
def test_limits_reach_the_proxy_settings(
    monkeypatch: pytest.MonkeyPatch, arguments: list[str], fields: dict[str, object]
) -> None:
    from wfpredirect.cli import _main

    seen: list[ProxySettings] = []
    monkeypatch.setattr(_main, "run_proxy", lambda settings: seen.append(settings) or 0)
    assert _main.main(["proxy", "--listen", "127.0.0.1:0", *arguments]) == 0
    assert {name: getattr(seen[0], name) for name in fields} == fields


@linux_only
def test_an_unknown_user_is_a_usage_error() -> None:
    result = wfpredirect_command("proxy", "--listen", "127.0.0.1:0", "--user", "no-such-user-x")
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr.splitlines()[-1] == (
        "wfpredirect proxy: error: argument --user: 'no-such-user-x' is not a user of this system"
    )
