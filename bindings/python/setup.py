"""Build hook of the ``easdirect`` package: compiles the cffi extension ``easdirect._native``
(the C ABI) and the small C extension ``easdirect._fastpick`` (the GIL-holding pick path)
against libeasdirect, and puts the library inside the package under its SONAME
``libeasdirect.so.{ABI major}`` (found through the extensions' ``$ORIGIN`` rpath).

Where the library comes from, first match wins:
1. ``EASDIRECT_LIB``: the path of a built ``libeasdirect.so`` (with ``EASDIRECT_INCLUDE``, the
   directory of its ``easdirect.h``, when it is not the repository's);
2. the repository's ``target/release/libeasdirect.so`` (``$CARGO_TARGET_DIR/release`` when set),
   reused as it is when present;
3. otherwise the crate is built with ``cargo build --release -p easdirect --locked`` from the
   repository root (set ``EASDIRECT_ROOT`` if the build does not run inside the repository).

The package's version is the repository's one version, ``[workspace.package] version`` of its
``Cargo.toml`` (``EASDIRECT_VERSION`` when the build runs with no repository), so the wheel,
``easdirect.__version__`` and ``eas_version()`` of the library it carries agree.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

HERE = Path(__file__).resolve().parent
LIB_NAME = "libeasdirect.so"


def _repo_root() -> Path | None:
    env = os.environ.get("EASDIRECT_ROOT")
    candidates = [Path(env)] if env else []
    candidates += [HERE.parent.parent, *HERE.parents]
    for c in candidates:
        if (c / "include" / "easdirect.h").is_file() and (c / "Cargo.toml").is_file():
            return c.resolve()
    return None


def _version() -> str:
    """``[workspace.package] version`` of the repository's Cargo.toml (the one version)."""
    env = os.environ.get("EASDIRECT_VERSION")
    if env:
        return env
    root = _repo_root()
    if root is None:
        raise SystemExit(
            "easdirect: the version is Cargo.toml's and the repository was not found; set "
            "EASDIRECT_ROOT (the repository) or EASDIRECT_VERSION"
        )
    section = None
    for line in (root / "Cargo.toml").read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line.startswith("["):
            section = line
        elif section == "[workspace.package]":
            m = re.fullmatch(r'version\s*=\s*"([^"]+)"', line)
            if m:
                return m.group(1)
    raise SystemExit(f"easdirect: {root / 'Cargo.toml'} has no [workspace.package] version")


def _cargo() -> str:
    found = shutil.which("cargo")
    if found:
        return found
    home = Path.home() / ".cargo" / "bin" / "cargo"
    if home.is_file():
        return str(home)
    raise SystemExit(
        "easdirect: libeasdirect.so is not built and cargo was not found; install a Rust "
        "toolchain (rustup) or set EASDIRECT_LIB to a built libeasdirect.so"
    )


def _locate() -> tuple[Path, Path]:
    """(path of libeasdirect.so, directory of easdirect.h)."""
    root = _repo_root()
    include_env = os.environ.get("EASDIRECT_INCLUDE")
    include = Path(include_env) if include_env else (root / "include" if root else None)
    if include is None or not (include / "easdirect.h").is_file():
        raise SystemExit(
            "easdirect: easdirect.h not found; build inside the libeasdirect repository or set "
            "EASDIRECT_ROOT (the repository) or EASDIRECT_INCLUDE (the header's directory)"
        )
    lib_env = os.environ.get("EASDIRECT_LIB")
    if lib_env:
        lib = Path(lib_env)
        if not lib.is_file():
            raise SystemExit(f"easdirect: EASDIRECT_LIB={lib_env} is not a file")
        return lib.resolve(), include.resolve()
    if root is None:
        raise SystemExit("easdirect: the libeasdirect repository was not found; set EASDIRECT_ROOT")
    target_dir = Path(os.environ.get("CARGO_TARGET_DIR") or root / "target")
    if not target_dir.is_absolute():
        target_dir = root / target_dir
    lib = target_dir / "release" / LIB_NAME
    if lib.is_file():
        print(f"easdirect: reusing {lib}")
    else:
        print(f"easdirect: {lib} not found; building the crate with cargo")
        subprocess.run(
            [_cargo(), "build", "--release", "-p", "easdirect", "--locked"], cwd=root, check=True
        )
        if not lib.is_file():
            raise SystemExit(f"easdirect: cargo finished but {lib} is missing")
    return lib.resolve(), include.resolve()


def _soname(include: Path) -> str:
    """The name programs linked against libeasdirect look for at run time:
    ``libeasdirect.so.{EAS_ABI_MAJOR}`` (the library's SONAME), the major read from the header."""
    header = (include / "easdirect.h").read_text(encoding="utf-8")
    for line in header.splitlines():
        if line.startswith("#define EAS_ABI_MAJOR "):
            return f"{LIB_NAME}.{int(line.split()[2])}"
    raise SystemExit(f"easdirect: {include / 'easdirect.h'} defines no EAS_ABI_MAJOR")


def _load_builder():
    spec = importlib.util.spec_from_file_location(
        "_easdirect_build_ffi", HERE / "easdirect" / "_build_ffi.py"
    )
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    return module


class BuildExt(build_ext):
    """Generates the cffi C source, compiles it, and copies libeasdirect.so next to it."""

    def run(self) -> None:
        # Always relinked (two small files): an extension linked against an older library
        # would name (NEEDED) what that one was called.
        self.force = True
        lib, include = _locate()
        # The extension links against a copy named libeasdirect.so in a private directory, so
        # that the linker cannot pick up another libeasdirect from the system paths.
        link_dir = Path(self.build_temp).resolve() / "easdirect-lib"
        link_dir.mkdir(parents=True, exist_ok=True)
        shutil.copy2(lib, link_dir / LIB_NAME)
        ffi = _load_builder().make_ffi([str(include)], [str(link_dir)])
        generated = ffi.distutils_extension(tmpdir=str(Path(self.build_temp) / "cffi"))
        for ext in self.extensions:
            if ext.name == "easdirect._native":
                for attr in (
                    "sources",
                    "include_dirs",
                    "library_dirs",
                    "libraries",
                    "extra_link_args",
                    "extra_compile_args",
                    "define_macros",
                ):
                    setattr(ext, attr, list(getattr(generated, attr) or []))
            elif ext.name == "easdirect._fastpick":
                ext.include_dirs = [str(include)]
                ext.library_dirs = [str(link_dir)]
                ext.libraries = ["easdirect"]
                ext.extra_link_args = ["-Wl,-rpath,$ORIGIN"]
                ext.extra_compile_args = ["-O2"]
        super().run()
        destinations = [Path(self.build_lib) / "easdirect"]
        if self.inplace:
            destinations.append(HERE / "easdirect")
        # Under its SONAME, which the extensions name (NEEDED) and find through $ORIGIN.
        soname = _soname(include)
        for dest in destinations:
            dest.mkdir(parents=True, exist_ok=True)
            stale = dest / LIB_NAME  # what older builds put there
            if stale.is_file() and not stale.is_symlink():
                stale.unlink()
            shutil.copy2(lib, dest / soname)


setup(
    version=_version(),
    ext_modules=[
        Extension("easdirect._native", sources=[]),
        Extension("easdirect._fastpick", sources=["easdirect/_fastpick.c"]),
    ],
    cmdclass={"build_ext": BuildExt},
)
