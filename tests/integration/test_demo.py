"""``python -m wfpredirect demo``, the README's main command: it runs to the
end with every answer correct, shows the loop the records prevent, leaves
nothing behind when stopped, and without root says how to run it."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from pathlib import Path

from netns import run_in_netns
from support import NEUTRAL_DIRECTORY, require_root, require_tool
from wfpredirect.cli import _proxy_log as proxy_log
from wfpredirect.cli._demo_netfilter import PROXY_LOG_PREFIX

DEMO = [sys.executable, "-m", "wfpredirect", "demo"]


def run_demo() -> tuple[int, str, str]:
    require_tool("nft")
    completed = subprocess.run(
        DEMO, capture_output=True, text=True, check=False, cwd=NEUTRAL_DIRECTORY, timeout=120
    )
    return completed.returncode, completed.stdout, completed.stderr


def test_the_demo_runs_to_the_end() -> None:
    status, output, errors = run_in_netns(run_demo)
    lines = [line.strip() for line in output.splitlines()]
    assert (status, errors) == (0, "")
    expected = [
        "original destination: 127.0.0.2 port 8080",
        "redirect context: None (netfilter keeps no driver context)",
        "upstream WITHOUT the records: the rule redirected it back into the proxy "
        "(it arrived for 127.0.0.2 port 8080 again): a loop",
        "upstream WITH the records: mark 0x40, which the rule lets pass; "
        "the origin answered 'HTTP/1.0 200 OK'",
        "20 of 20 answers correct",
        "the proxy stopped with exit status 0",
        "done: the proxy and the origin are stopped, the namespace goes with this process",
    ]
    assert [line for line in expected if line not in lines] == []
    relayed = [
        (match["client"].split(":")[0], match["target"], match["up"], match["outcome"])
        for line in lines
        if line.startswith(PROXY_LOG_PREFIX)
        and (match := proxy_log.RELAYED.pattern.fullmatch(line.removeprefix(PROXY_LOG_PREFIX)))
    ]
    assert relayed == [("127.0.0.1", "127.0.0.2:8080", "77", "closed")] * 20
    assert [line for line in lines if "WRONG" in line] == []


def processes_in(namespace: str) -> list[str]:
    """Every process that is in network namespace `namespace` ("net:[N]") or
    holds it open."""
    holders = []
    for process in Path("/proc").iterdir():
        if not process.name.isdigit():
            continue
        try:
            links = [process / "ns" / "net", *(process / "fd").iterdir()]
            if any(str(link.readlink()) == namespace for link in links):
                holders.append(process.name)
        except OSError:  # a process that ended while we looked
            continue
    return holders


def test_sigterm_leaves_no_process_and_no_namespace() -> None:
    def body() -> dict[str, object]:
        require_tool("nft")
        demo = subprocess.Popen(
            [*DEMO, "--keep-running"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=NEUTRAL_DIRECTORY,
        )
        assert demo.stdout is not None
        seen = []
        for line in demo.stdout:
            seen.append(line)
            if line.startswith("still running"):
                break
        output = "".join(seen)
        namespace = re.search(r"net:\[\d+\]", output)
        children = re.findall(r"\(pid (\d+)\)", output)
        assert namespace is not None and len(children) == 2, output
        in_namespace_before = len(processes_in(namespace.group()))
        demo.send_signal(signal.SIGTERM)
        rest, errors = demo.communicate(timeout=10)
        return {
            "exit": demo.returncode,
            "errors": errors,
            "in_namespace_before": in_namespace_before,
            "last_line": rest.splitlines()[-1],
            "in_namespace_after": processes_in(namespace.group()),
            "children_alive": [pid for pid in children if Path(f"/proc/{pid}").exists()],
        }

    assert run_in_netns(body) == {
        "exit": 0,
        "errors": "",
        "in_namespace_before": 3,  # the demo, the origin, the proxy
        "last_line": "done: the proxy and the origin are stopped, the namespace goes with "
        "this process",
        "in_namespace_after": [],
        "children_alive": [],
    }


def test_without_root_it_says_how_to_run_it() -> None:
    require_root()
    setpriv = require_tool("setpriv")
    # Root without any capability: what the demo checks is CAP_SYS_ADMIN, and
    # another uid could not read a checkout in a private (0700) folder.
    completed = subprocess.run(
        [setpriv, "--inh-caps=-all", "--bounding-set=-all", *DEMO],
        capture_output=True,
        text=True,
        check=False,
        cwd=NEUTRAL_DIRECTORY,
        timeout=60,
    )
    assert (completed.returncode, completed.stdout, completed.stderr) == (
        1,
        "",
        "the demo needs root: it creates a network namespace and loads an nft rule. "
        f"Run it as: sudo {sys.executable} -m wfpredirect demo\n",
    )
