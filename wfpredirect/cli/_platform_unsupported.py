"""What the command line answers on a platform without a backend (neither
Linux nor Windows): see _platform. The doctor says so, the demo too."""

from __future__ import annotations

import platform
import sys

# What only Linux has (the native relay, workers, capabilities) is refused as on Windows.
from ._doctor import Finding
from ._platform_winsock import end_binding as end_binding
from ._platform_winsock import hold_signals as hold_signals
from ._platform_winsock import keep_privileges as keep_privileges
from ._platform_winsock import privileges_problem as privileges_problem
from ._platform_winsock import proxy_problem as proxy_problem
from ._platform_winsock import raise_descriptor_limit as raise_descriptor_limit
from ._platform_winsock import relay_paths as relay_paths
from ._platform_winsock import start_worker as start_worker
from ._platform_winsock import watch_parent as watch_parent
from ._platform_winsock import workers_problem as workers_problem


def doctor_checks() -> list[Finding]:
    return [
        Finding(
            "platform",
            platform.platform(),
            problem=f"no backend for {sys.platform}: every wfpredirect call raises "
            "UnsupportedError",
            what_to_do="run the proxy on Linux (netfilter) or Windows (WFP)",
        )
    ]


def run_demo(keep_running: bool) -> int:
    print(
        "wfpredirect has no backend on this platform: it redirects with netfilter on Linux "
        "and with the Windows Filtering Platform on Windows."
    )
    return 1
