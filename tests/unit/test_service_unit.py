"""examples/wfpredirect-proxy.service: a unit systemd accepts, with the
settings docs/service.md describes, shown there as it is."""

from __future__ import annotations

import configparser
import re
import subprocess

from support import linux_only, project_file, require_tool

UNIT = "examples/wfpredirect-proxy.service"


def service_section() -> dict[str, str]:
    # systemd's syntax is an INI file's, with comments, case kept.
    parser = configparser.ConfigParser(interpolation=None, strict=True)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(project_file(UNIT).read_text(encoding="utf-8"))
    return dict(parser["Service"])


def test_the_docs_show_the_unit_as_it_is() -> None:
    unit = project_file(UNIT).read_text(encoding="utf-8")
    docs = project_file("docs/service.md").read_text(encoding="utf-8")
    assert f"```ini\n{unit}```\n" in docs


def test_the_unit_runs_unprivileged_with_the_two_capabilities_and_a_graceful_stop() -> None:
    service = service_section()
    grace = float(re.search(r"--grace (\S+)", service["ExecStart"])[1])  # type: ignore[index]
    assert {
        name: service[name]
        for name in (
            "User",
            "AmbientCapabilities",
            "CapabilityBoundingSet",
            "NoNewPrivileges",
            "LimitNOFILE",
            "KillSignal",
            "Restart",
        )
    } == {
        "User": "wfpredirect",
        "AmbientCapabilities": "CAP_NET_ADMIN CAP_NET_RAW",
        "CapabilityBoundingSet": "CAP_NET_ADMIN CAP_NET_RAW",
        "NoNewPrivileges": "yes",
        "LimitNOFILE": "65536",
        "KillSignal": "SIGTERM",
        "Restart": "on-failure",
    }
    # systemd's SIGKILL comes after --grace, not during it.
    assert float(service["TimeoutStopSec"]) > grace


@linux_only
def test_systemd_accepts_the_unit() -> None:
    """systemd-analyze verify: every key known, every value valid (it
    exits 0 on an unknown key, but says so)."""
    command = require_tool("systemd-analyze")
    verified = subprocess.run(
        [command, "verify", str(project_file(UNIT))],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (verified.returncode, verified.stdout, verified.stderr) == (0, "", "")
