"""Builds berth's C ABI library (the Rust crate berth-ffi) with cargo and ships it inside the
package, so that `pip install ./bindings/python` is all a user runs.

Set BERTH_FFI_LIB to the path of an already built libberth_ffi.so to package that one
instead (CI builds the library once and reuses it).
"""
import os
import shutil
import subprocess
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.dist import Distribution

LIBRARY = "libberth_ffi.so"
HERE = Path(__file__).resolve().parent
WORKSPACE = HERE.parent.parent


def built_library() -> Path:
    given = os.environ.get("BERTH_FFI_LIB")
    if given:
        return Path(given)
    if shutil.which("cargo") is None:
        raise SystemExit("building berth needs Rust's cargo (https://rustup.rs), or BERTH_FFI_LIB")
    subprocess.run(
        ["cargo", "build", "--release", "--locked", "-p", "berth-ffi"],
        cwd=WORKSPACE,
        check=True,
    )
    target = Path(os.environ.get("CARGO_TARGET_DIR", WORKSPACE / "target"))
    return target / "release" / LIBRARY


class BuildWithLibrary(build_py):
    def run(self):
        super().run()
        destination = Path(self.build_lib) / "berth"
        destination.mkdir(parents=True, exist_ok=True)
        shutil.copy2(built_library(), destination / LIBRARY)


class NativeDistribution(Distribution):
    """The wheel carries a native library, so it is tagged for this platform."""

    def has_ext_modules(self):
        return True


setup(cmdclass={"build_py": BuildWithLibrary}, distclass=NativeDistribution)
