"""The command-line application built on the library: ``proxy``, ``doctor``
and ``demo`` (docs/design.md, "Layers"). Nothing here is the library's API;
the library (the package root) never imports this folder."""
