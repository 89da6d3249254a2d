"""``python -m wfpredirect``: the command line (wfpredirect/cli/_main.py)."""

from __future__ import annotations

import sys

from .cli._main import main

if __name__ == "__main__":
    sys.exit(main())
