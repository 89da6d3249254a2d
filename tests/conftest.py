"""Imported before any test module: tests/support.py takes the sanitizer
pass's preload out of the environment before any subprocess starts."""

from __future__ import annotations

import support  # noqa: F401 - imported for its effect on os.environ
