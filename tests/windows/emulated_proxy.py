"""`wfpredirect proxy` in a test build, with the emulated callout's table
loaded first: what test_emulated_callout.py starts as a subprocess.

Usage: python emulated_proxy.py TABLE.json STOP_FILE SETS.json proxy ARGS...

TABLE.json holds {"not_redirected_error": N, "redirects": [{"peer": [host,
port], "original_destination": [host, port], "records": HEX, "context": HEX
or null}]}. When STOP_FILE appears, the proxy gets SIGBREAK, as Ctrl-Break
delivers it on Windows (Wine cannot deliver console events between
processes, so it is raised here, in the proxy's own process). At exit every
SET the emulated stack saw is written to SETS.json as [[socket, HEX, bound,
connected]].
"""

from __future__ import annotations

import json
import signal
import sys
import threading
import time
from pathlib import Path

from wfpredirect import _core
from wfpredirect.cli._main import main

ERROR_INSUFFICIENT_BUFFER = 122


def load(table_file: Path) -> None:
    table = json.loads(table_file.read_text())
    _core._emulated_callout_reset(table["not_redirected_error"])
    for redirect in table["redirects"]:
        context = redirect["context"]
        _core._emulated_callout_add(
            tuple(redirect["peer"]),
            tuple(redirect["original_destination"]),
            bytes.fromhex(redirect["records"]),
            None if context is None else bytes.fromhex(context),
            ERROR_INSUFFICIENT_BUFFER,
            False,
        )


def break_when(stop_file: Path) -> None:
    while not stop_file.exists():
        time.sleep(0.05)
    signal.raise_signal(signal.SIGBREAK)


def run(arguments: list[str]) -> int:
    table_file, stop_file, sets_file = map(Path, arguments[:3])
    load(table_file)
    threading.Thread(target=break_when, args=(stop_file,), daemon=True).start()
    status = main(arguments[3:])
    sets = [
        [handle, records.hex(), bound, connected]
        for handle, records, bound, connected in _core._emulated_callout_sets()
    ]
    sets_file.write_text(json.dumps(sets))
    return status


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))
