"""edge._clickfast under AddressSanitizer and UndefinedBehaviorSanitizer.

The module is built a second time with ``-fsanitize=address,undefined`` into a directory of its
own (the in-place build the other tests use is left alone), and the tests that drive it in-process
run again in a subprocess that loads that build: libasan preloaded (the interpreter is not built
with it), leak detection off (CPython keeps objects until exit by design), and UBSan stopping at
its first report. CPython allocates through malloc (``PYTHONMALLOC=malloc``), so that an object
it frees is freed in ASan's eyes too and a read of it is reported. The build keeps the C API's
assertions (no ``-DNDEBUG``). Any sanitizer report fails the test, with the report in the
message.

Left out: tests/test_encoder_limits.py, which caps the address space with ``RLIMIT_AS`` (ASan
reserves terabytes of shadow memory up front) and runs its encoders in subprocesses of their own.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "edge" / "_clickfast.c"
# The tests that call the module in-process; the stores they need (test_hotpath's) are started
# by conftest as usual, without the sanitizer runtime.
TESTS = [
    "tests/test_clickencoder.py",
    "tests/test_clickfast_safety.py",
    "tests/test_clickfast_faults.py",
    "tests/test_event_spec.py",
    "tests/test_hotpath.py",
]
FLAGS = [
    "-fsanitize=address,undefined", "-fno-omit-frame-pointer", "-fno-sanitize-recover=all",
    "-DCLICKFAST_FAULTS",  # test_clickfast_faults then fails allocations in this process
]  # fmt: skip
REPORTS = ("ERROR: AddressSanitizer", "runtime error:", "ERROR: LeakSanitizer", "SUMMARY: ")

# Loaded by the subprocess's pytest before any test module: edge._clickfast is the sanitized
# build, and the stores conftest starts do not inherit the preloaded runtime.
PLUGIN = """
import importlib.util, os, sys
import edge

os.environ.pop("LD_PRELOAD", None)
_path = os.environ["CLICKFAST_SANITIZED"]
_spec = importlib.util.spec_from_file_location("edge._clickfast", _path)
_module = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_module)
sys.modules["edge._clickfast"] = _module
edge._clickfast = _module


def pytest_sessionfinish(session):
    import edge.clickencoder
    with open(os.environ["CLICKFAST_LOADED"], "w") as loaded:
        print(sys.modules["edge._clickfast"].__file__, file=loaded)
        print(edge.clickencoder._clickfast.__file__, file=loaded)
"""


def _runtime() -> Path | None:
    gcc = shutil.which("gcc")
    if gcc is None:
        return None
    found = subprocess.run(
        [gcc, "-print-file-name=libasan.so"], capture_output=True, text=True, check=False
    ).stdout.strip()
    return Path(found) if found and Path(found).is_absolute() and Path(found).exists() else None


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_the_module_s_tests_pass_under_the_sanitizers(tmp_path: Path) -> None:
    libasan = _runtime()
    if libasan is None:
        pytest.skip("gcc with libasan (gcc -print-file-name=libasan.so) not found")
    out = tmp_path / ("_clickfast" + str(sysconfig.get_config_var("EXT_SUFFIX")))
    build = subprocess.run(
        [
            "gcc", "-shared", "-fPIC", "-O1", "-g", *FLAGS, "-Wall", "-Wextra",
            "-Wno-unused-parameter", "-I" + sysconfig.get_paths()["include"], str(SOURCE),
            "-o", str(out),
        ],
        capture_output=True, text=True, check=False, timeout=300,
    )  # fmt: skip
    if build.returncode != 0 and "sanitize" in build.stderr:
        pytest.skip(f"gcc cannot build with the sanitizers here: {build.stderr[-500:]}")
    assert build.returncode == 0, build.stderr
    (tmp_path / "clickfast_sanitized.py").write_text(textwrap.dedent(PLUGIN))
    env = {
        **os.environ,
        "LD_PRELOAD": str(libasan),
        "ASAN_OPTIONS": "detect_leaks=0:abort_on_error=0:halt_on_error=1",
        "UBSAN_OPTIONS": "halt_on_error=1:print_stacktrace=1",
        "CLICKFAST_SANITIZED": str(out),
        "CLICKFAST_LOADED": str(tmp_path / "loaded"),
        "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)]),
        "PYTHONFAULTHANDLER": "1",
        "PYTHONMALLOC": "malloc",  # objects freed by CPython are freed in ASan's eyes too
    }
    run = subprocess.run(
        [
            sys.executable, "-m", "pytest", "-q", "-p", "clickfast_sanitized",
            "-p", "no:cacheprovider", "-o", "addopts=-ra", *TESTS,
        ],
        cwd=ROOT, env=env, capture_output=True, text=True, check=False, timeout=840,
    )  # fmt: skip
    output = run.stdout + run.stderr
    reports = [line for line in output.splitlines() if line.startswith(REPORTS) or
               any(report in line for report in REPORTS[:3])]  # fmt: skip
    assert not reports, output[-8000:]
    assert run.returncode == 0, output[-8000:]
    # the sanitized build is the one the tests and the edge's encoder used
    assert (tmp_path / "loaded").read_text().split() == [str(out)] * 2
    assert " passed" in run.stdout.splitlines()[-1], run.stdout[-2000:]
