"""Build wfpredirect._core: the portable core, one backend per platform, and
the pybind11 glue. Sources are globbed and sorted for reproducible builds."""

from __future__ import annotations

import sys
from glob import glob

from pybind11.setup_helpers import Pybind11Extension
from setuptools import setup


def backend() -> tuple[str, list[str]]:
    """The backend folder under csrc/core and the libraries it links."""
    if sys.platform == "win32":
        return "windows", ["ws2_32"]
    if sys.platform.startswith("linux"):
        return "linux", []
    return "other", []


backend_folder, libraries = backend()
sources = (
    sorted(glob("csrc/core/*.cpp"))
    + sorted(glob(f"csrc/core/{backend_folder}/*.cpp"))
    + sorted(glob("csrc/python/*.cpp"))
)

# Link-time optimisation lets the compiler inline the core's small helpers
# (address conversion, record checks) across files into the hot calls.
optimisation = ["/GL"] if sys.platform == "win32" else ["-flto"]
link_optimisation = ["/LTCG"] if sys.platform == "win32" else ["-flto"]

extension = Pybind11Extension(
    "wfpredirect._core",
    sources,
    cxx_std=17,
    libraries=libraries,
    define_macros=[("WIN32_LEAN_AND_MEAN", None), ("NOMINMAX", None)]
    if sys.platform == "win32"
    else [],
    extra_compile_args=optimisation,
    extra_link_args=link_optimisation,
)

setup(ext_modules=[extension])
