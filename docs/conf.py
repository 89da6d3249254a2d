"""Sphinx configuration of the documentation site (built by .ci/run with
warnings as errors: sphinx-build -W --keep-going -b html docs build/docs).
The API reference comes from the installed package's docstrings and its
native functions' text signatures (wfpredirect/_core.pyi has the types)."""

import wfpredirect

project = "wfpredirect"
release = wfpredirect.__version__
extensions = ["myst_parser", "sphinx.ext.autodoc"]
source_suffix = {".md": "markdown"}
master_doc = "index"
exclude_patterns = ["_build"]
myst_heading_anchors = 3
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
html_theme = "alabaster"
nitpicky = False
