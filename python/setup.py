"""Copies the library built by `make` (../build/lib/libnrt.so.1) into the package, so that an
installed nrt_sendrecv finds it beside itself. NRT_SENDRECV_BUNDLE=<path> bundles another file;
NRT_SENDRECV_BUNDLE=0 bundles nothing (the package then finds the library through
NRT_SENDRECV_LIBRARY or the loader's path). Everything else is in pyproject.toml."""

import os
import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent
BUILT = HERE.parent / "build" / "lib" / "libnrt.so.1"


class BuildPy(build_py):
    def run(self):
        super().run()
        choice = os.environ.get("NRT_SENDRECV_BUNDLE", "")
        if choice == "0":
            return
        src = Path(choice) if choice else BUILT
        if not src.is_file():
            print(f"nrt_sendrecv: {src} not found: no library bundled (run `make` first, or set NRT_SENDRECV_LIBRARY at run time)")
            return
        dst = Path(self.build_lib) / "nrt_sendrecv" / "libnrt.so.1"
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src.resolve(), dst)
        os.chmod(dst, 0o755)
        print(f"nrt_sendrecv: bundled {src}")


cmdclass = {"build_py": BuildPy}
try:  # setuptools >= 70.1 carries bdist_wheel; before, the wheel package does
    from setuptools.command.bdist_wheel import bdist_wheel
except ImportError:
    try:
        from wheel.bdist_wheel import bdist_wheel
    except ImportError:
        bdist_wheel = None

if bdist_wheel is not None:

    class BdistWheel(bdist_wheel):
        """A wheel that carries the library is for this platform: py3-none-<platform>."""

        def finalize_options(self):
            super().finalize_options()
            self.root_is_pure = os.environ.get("NRT_SENDRECV_BUNDLE", "") == "0" or not BUILT.is_file()

        def get_tag(self):
            python, abi, plat = super().get_tag()
            return ("py3", "none", plat) if not self.root_is_pure else (python, abi, plat)

    cmdclass["bdist_wheel"] = BdistWheel

setup(cmdclass=cmdclass)
