"""Builds the two native candidates of bench_calls.py with the system
compiler (cc): the floor (native/floor.c, a plain shared library driven
through ctypes) and the C-API reference (native/capi_reference.c, an
extension module compiled against this Python's headers). Linux only."""

from __future__ import annotations

import ctypes
import importlib.util
import shutil
import subprocess
import sysconfig
from pathlib import Path
from types import ModuleType

NATIVE = Path(__file__).resolve().parent / "native"
#: Both references are built like a release extension: optimised, no debug checks.
CFLAGS = ["-O2", "-fPIC", "-shared", "-DNDEBUG"]


def compiler() -> str:
    found = shutil.which("cc")
    if found is None:
        raise RuntimeError("the benchmark builds its references with cc, which is not installed")
    return found


def build_floor(directory: Path) -> Path:
    output = directory / "floor.so"
    subprocess.run([compiler(), *CFLAGS, str(NATIVE / "floor.c"), "-o", str(output)], check=True)
    return output


def build_capi_reference(directory: Path) -> Path:
    output = directory / ("capi_reference" + sysconfig.get_config_var("EXT_SUFFIX"))
    include = sysconfig.get_paths()["include"]
    subprocess.run(
        [compiler(), *CFLAGS, f"-I{include}", str(NATIVE / "capi_reference.c"), "-o", str(output)],
        check=True,
    )
    return output


def build(directory: Path) -> None:
    build_floor(directory)
    build_capi_reference(directory)


def load_floor(directory: Path) -> ctypes.CDLL:
    floor = ctypes.CDLL(str(directory / "floor.so"))
    for name in ("floor_original_destination", "floor_query_redirect_records"):
        function = getattr(floor, name)
        function.argtypes = [ctypes.c_int, ctypes.c_long]
        function.restype = ctypes.c_long
    floor.floor_set_redirect_records.argtypes = [ctypes.c_int, ctypes.c_long, ctypes.c_uint]
    floor.floor_set_redirect_records.restype = ctypes.c_long
    for name in (
        "floor_connection",
        "floor_connection_checked",
        "floor_connection_three_queries",
    ):
        function = getattr(floor, name)
        function.argtypes = [ctypes.c_int, ctypes.c_long, ctypes.c_int, ctypes.c_uint]
        function.restype = ctypes.c_long
    return floor


def load_capi_reference(directory: Path) -> ModuleType:
    path = directory / ("capi_reference" + sysconfig.get_config_var("EXT_SUFFIX"))
    spec = importlib.util.spec_from_file_location("capi_reference", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
