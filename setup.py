"""Build wfpredirect._core: the portable core, one backend per platform, and
the pybind11 glue. Sources are globbed and sorted for reproducible builds."""

from __future__ import annotations

import os
import sys
from glob import glob

from pybind11.setup_helpers import Pybind11Extension
from setuptools import setup
from setuptools.command.build_ext import build_ext


def backend() -> tuple[str, list[str]]:
    """The backend folder under csrc/core and the libraries it links."""
    if sys.platform == "win32":
        return "wfp", ["ws2_32"]
    if sys.platform.startswith("linux"):
        return "netfilter", []
    return "unsupported", []


backend_folder, libraries = backend()
sources = (
    sorted(glob("csrc/core/common/*.cpp"))
    + sorted(glob(f"csrc/core/{backend_folder}/*.cpp"))
    + sorted(glob("csrc/python/*.cpp"))
)
# The mark rule is portable and in every build, so that LOOP_MARK, MARK_MASK
# and the mark keywords mean the same everywhere (only netfilter applies them).
if backend_folder != "netfilter":
    sources.append("csrc/core/netfilter/marks.cpp")
macros = [("WIN32_LEAN_AND_MEAN", None), ("NOMINMAX", None)] if sys.platform == "win32" else []

# Test builds only: WFPREDIRECT_EMULATED_CALLOUT=1 puts an emulated WFP
# callout driver in front of ws2_32 (csrc/core/wfp/emulated), so that the
# Windows lane can play redirected connections under Wine, which has no WFP.
# No release build sets it; the lane checks that its release wheel has none.
if os.environ.get("WFPREDIRECT_EMULATED_CALLOUT") == "1":
    if backend_folder != "wfp":
        raise SystemExit("WFPREDIRECT_EMULATED_CALLOUT=1 is for Windows builds only")
    sources += sorted(glob("csrc/core/wfp/emulated/*.cpp"))
    sources += sorted(glob("csrc/python/emulated/*.cpp"))
    macros.append(("WFPREDIRECT_EMULATED_CALLOUT", "1"))

# Link-time optimisation lets the compiler inline the core's small helpers
# (address conversion, record checks) across files into the hot calls.
optimisation = ["/GL"] if sys.platform == "win32" else ["-flto"]
link_optimisation = ["/LTCG"] if sys.platform == "win32" else ["-flto"]

# MSVC at its fourth warning level for our sources; the headers included with
# angle brackets (the SDK, Python, pybind11) are not ours to fix. The Windows
# lane of the tests (and anyone who sets WFPREDIRECT_WARNINGS_AS_ERRORS=1)
# makes every such warning an error there; a plain `pip install` does not, so that
# a newer compiler's new warning cannot stop a user's build.
warnings_as_errors = os.environ.get("WFPREDIRECT_WARNINGS_AS_ERRORS") == "1"
if sys.platform == "win32":
    warnings = ["/W4", "/external:anglebrackets", "/external:W0"]
    warnings += ["/WX"] if warnings_as_errors else []
else:
    warnings = []


class BuildExt(build_ext):
    """On MSVC, link the C++ standard library and the compiler runtime
    statically and the Universal CRT dynamically (Microsoft's "hybrid CRT").

    A /MD build imports MSVCP140.dll, which neither Windows nor CPython ships
    (CPython brings vcruntime140 and vcruntime140_1 only), so on a machine
    without the Visual C++ redistributable the import would fail. /MT alone
    would give the module a private C heap; linking ucrt.lib in place of
    libucrt.lib keeps the one heap that Windows' Universal CRT provides.
    """

    def build_extensions(self) -> None:
        compiler = self.compiler
        if compiler.compiler_type == "msvc":
            if not compiler.initialized:
                compiler.initialize()
            for options in (compiler.compile_options, compiler.compile_options_debug):
                # Our level replaces setuptools' /W3 (two levels would be
                # a command-line warning of their own).
                options[:] = [o for o in options if o != "/W3"]
                runtimes = [o for o in options if o in ("/MD", "/MDd")]
                if not runtimes:
                    raise RuntimeError(f"expected /MD among MSVC's options {options}")
                for runtime in runtimes:
                    options[options.index(runtime)] = runtime.replace("/MD", "/MT")
            for extension in self.extensions:
                extension.extra_link_args += ["/NODEFAULTLIB:libucrt.lib", "ucrt.lib"]
        super().build_extensions()


extension = Pybind11Extension(
    "wfpredirect._core",
    sources,
    cxx_std=17,
    libraries=libraries,
    define_macros=macros,
    extra_compile_args=optimisation + warnings,
    extra_link_args=link_optimisation,
)

setup(ext_modules=[extension], cmdclass={"build_ext": BuildExt})
