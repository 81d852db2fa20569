"""labctl's PEP 517 build backend: the C++ (engine, CLI, Python module) is built by CMake.

pyproject.toml names it (backend-path), so `pip install .` needs no backend from PyPI; Debian 12
has no CMake-driven backend (scikit-build-core) to use instead. What a wheel holds:

    labctl/                         the Python package with its C++ module labctl._core
    labctl-V.data/scripts/labctl    the command (pip puts it in the environment's bin/)
    labctl-V.data/data/share/...    labctl(1) and the bash/zsh/fish completions
    labctl-V.dist-info/             METADATA, entry_points.txt (the pytest11 plugin), RECORD

The same module writes the .dist-info that `make install` and the .deb install, and picks the
Python directory an install prefix uses (`python3 labctl_backend.py dist-info|site-dir ...`),
so every way of installing registers the pytest plugin the same way.

config_settings (pip --config-settings KEY=VALUE):
    build-dir   a CMake build tree to use (and keep) instead of a temporary one; an existing
                tree (e.g. the checkout's build/) is reused as it is configured.
    jobs        parallel build jobs (default: CMAKE_BUILD_PARALLEL_LEVEL, else the CPU count)
"""
from __future__ import annotations

import base64
import csv
import hashlib
import importlib.machinery
import io
import os
import pathlib
import re
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import tempfile
import zipfile

ROOT = pathlib.Path(__file__).resolve().parents[2]
NAME = "labctl"


# ---- metadata: pyproject.toml's [project], the version from CMakeLists.txt -------------------

def project_version(root: pathlib.Path = ROOT) -> str:
    text = (root / "CMakeLists.txt").read_text()
    m = re.search(r"project\(\s*labctl\s+VERSION\s+([0-9][0-9.]*)", text)
    if not m:
        raise RuntimeError("CMakeLists.txt: no `project(labctl VERSION x.y.z)`")
    return m.group(1)


def _project(root: pathlib.Path = ROOT) -> dict:
    import tomllib
    with open(root / "pyproject.toml", "rb") as f:
        return tomllib.load(f)["project"]


def dist_info_name(root: pathlib.Path = ROOT) -> str:
    return f"{NAME}-{project_version(root)}.dist-info"


def write_dist_info(out: pathlib.Path, root: pathlib.Path = ROOT, installer: str | None = None) -> str:
    """Writes NAME-VERSION.dist-info (METADATA, entry_points.txt, top_level.txt) into OUT."""
    p = _project(root)
    d = out / dist_info_name(root)
    d.mkdir(parents=True, exist_ok=True)
    lines = ["Metadata-Version: 2.1", f"Name: {p['name']}", f"Version: {project_version(root)}"]
    if "description" in p:
        lines.append(f"Summary: {p['description']}")
    if "requires-python" in p:
        lines.append(f"Requires-Python: {p['requires-python']}")
    for url_name, url in p.get("urls", {}).items():
        lines.append(f"Project-URL: {url_name}, {url}")
    for dep in p.get("dependencies", []):
        lines.append(f"Requires-Dist: {dep}")
    (d / "METADATA").write_text("\n".join(lines) + "\n")
    eps = io.StringIO()
    for group, entries in p.get("entry-points", {}).items():
        eps.write(f"[{group}]\n")
        for k, v in entries.items():
            eps.write(f"{k} = {v}\n")
        eps.write("\n")
    (d / "entry_points.txt").write_text(eps.getvalue())
    (d / "top_level.txt").write_text(NAME + "\n")
    if installer:
        (d / "INSTALLER").write_text(installer + "\n")
    return d.name


def site_dir(prefix: str) -> str:
    """The directory /usr/bin/python3 imports from for an install under PREFIX.

    /usr (also a packaging root ending in /usr): Debian's /usr/lib/python3/dist-packages.
    /usr/local: Debian's /usr/local/lib/python3.X/dist-packages ("posix_local", whose {base}
    is /usr). Else PREFIX/lib/python3.X/site-packages."""
    schemes = sysconfig.get_scheme_names()
    prefix = prefix.rstrip("/") or "/"
    if prefix.endswith("/usr") and "deb_system" in schemes:
        return sysconfig.get_path("platlib", "deb_system", vars={"base": prefix, "platbase": prefix})
    if prefix == "/usr/local" and "posix_local" in schemes:
        return sysconfig.get_path("platlib", "posix_local", vars={"base": "/usr", "platbase": "/usr"})
    return sysconfig.get_path("platlib", "posix_prefix", vars={"base": prefix, "platbase": prefix})


# ---- the build --------------------------------------------------------------------------------

def _cmake_build(build_dir: pathlib.Path, jobs: str | None) -> None:
    cmake = shutil.which("cmake")
    if not cmake:
        raise RuntimeError("labctl needs CMake (Debian: apt-get install cmake)")
    cache = build_dir / "CMakeCache.txt"
    args = [cmake, "-S", str(ROOT), "-B", str(build_dir)]
    if not cache.exists():
        # The project's default build type (RelWithDebInfo: what CI builds; GCC 12 at -O3
        # warns falsely, -Werror); the wheel gets stripped copies.
        args += ["-DBUILD_TESTING=OFF", f"-DPython3_EXECUTABLE={sys.executable}"]
        # With PyPI's pybind11 (build isolation) its CMake files are inside the package.
        try:
            import pybind11
            args.append(f"-Dpybind11_DIR={pybind11.get_cmake_dir()}")
        except Exception:  # not installed, or without its CMake files: find_package looks
            pass
    subprocess.run(args, check=True, stdout=sys.stderr)
    jobs = jobs or os.environ.get("CMAKE_BUILD_PARALLEL_LEVEL") or str(os.cpu_count() or 1)
    subprocess.run([cmake, "--build", str(build_dir), "-j", jobs, "--target", "labctl", "labctl_python",
                    "labctl_shell_files"], check=True, stdout=sys.stderr)


def _wheel_tag() -> str:
    impl = {"cpython": "cp"}.get(sys.implementation.name, sys.implementation.name)
    py = f"{impl}{sys.version_info.major}{sys.version_info.minor}"
    plat = sysconfig.get_platform().replace("-", "_").replace(".", "_")
    return f"{py}-{py}-{plat}"


def _record_line(arc: str, data: bytes) -> list[str]:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return [arc, f"sha256={digest}", str(len(data))]


def _files_for_wheel(build_dir: pathlib.Path, version: str) -> list[tuple[str, pathlib.Path, int]]:
    """(name in the wheel, file, mode) for everything but the .dist-info."""
    pkg = build_dir / "python" / NAME
    suffix = importlib.machinery.EXTENSION_SUFFIXES[0]
    if not (pkg / f"_core{suffix}").exists():
        built = sorted(p.name for p in pkg.glob("_core*.so"))
        raise RuntimeError(f"{build_dir} holds {built}, not _core{suffix} for {sys.executable}: "
                           "that build tree was made for another Python")
    files = []
    for f in sorted(pkg.rglob("*")):
        if f.is_file() and "__pycache__" not in f.parts:
            files.append((f"{NAME}/{f.relative_to(pkg).as_posix()}", f, 0o644))
    data = f"{NAME}-{version}.data"
    files.append((f"{data}/scripts/labctl", build_dir / "labctl", 0o755))
    shell = build_dir / "shell"
    for arc, name in (("share/man/man1/labctl.1", "labctl.1"),
                      ("share/bash-completion/completions/labctl", "labctl.bash"),
                      ("share/zsh/site-functions/_labctl", "_labctl"),
                      ("share/fish/vendor_completions.d/labctl.fish", "labctl.fish")):
        files.append((f"{data}/data/{arc}", shell / name, 0o644))
    return files


def _stripped(path: pathlib.Path, tmp: pathlib.Path) -> bytes:
    """The file without symbols and debug information (as packages ship), if strip exists."""
    strip = shutil.which("strip")
    if not strip:
        return path.read_bytes()
    copy = tmp / f"strip-{path.name}"
    subprocess.run([strip, "--strip-unneeded", "-o", str(copy), str(path)], check=True)
    return copy.read_bytes()


def _zip_add(z: zipfile.ZipFile, arc: str, data: bytes, mode: int) -> None:
    info = zipfile.ZipInfo(arc, date_time=(1980, 1, 1, 0, 0, 0))
    info.external_attr = (0o100000 | mode) << 16
    info.compress_type = zipfile.ZIP_DEFLATED
    z.writestr(info, data)


# ---- PEP 517 hooks ----------------------------------------------------------------------------

def get_requires_for_build_wheel(config_settings=None):
    return []


def get_requires_for_build_sdist(config_settings=None):
    return []


def prepare_metadata_for_build_wheel(metadata_directory, config_settings=None):
    return write_dist_info(pathlib.Path(metadata_directory))


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    settings = config_settings or {}
    version = project_version()
    with tempfile.TemporaryDirectory(prefix="labctl-wheel-") as tmp:
        build_dir = pathlib.Path(settings["build-dir"]).resolve() if settings.get("build-dir") else \
            pathlib.Path(tmp) / "build"
        _cmake_build(build_dir, settings.get("jobs"))
        info = write_dist_info(pathlib.Path(tmp) / "meta")
        tag = _wheel_tag()
        wheel_name = f"{NAME}-{version}-{tag}.whl"
        record = []
        with zipfile.ZipFile(pathlib.Path(wheel_directory) / wheel_name, "w") as z:
            for arc, path, mode in _files_for_wheel(build_dir, version):
                data = _stripped(path, pathlib.Path(tmp)) if mode == 0o755 or path.suffix == ".so" else \
                    path.read_bytes()
                _zip_add(z, arc, data, mode)
                record.append(_record_line(arc, data))
            wheel = (f"Wheel-Version: 1.0\nGenerator: labctl_backend {version}\nRoot-Is-Purelib: false\n"
                     f"Tag: {tag}\n").encode()
            for arc, data in [(f"{info}/WHEEL", wheel)] + [
                    (f"{info}/{f.name}", f.read_bytes())
                    for f in sorted((pathlib.Path(tmp) / "meta" / info).iterdir())]:
                _zip_add(z, arc, data, 0o644)
                record.append(_record_line(arc, data))
            out = io.StringIO()
            csv.writer(out, lineterminator="\n").writerows(record + [[f"{info}/RECORD", "", ""]])
            _zip_add(z, f"{info}/RECORD", out.getvalue().encode(), 0o644)
    return wheel_name


def build_sdist(sdist_directory, config_settings=None):
    """The files git tracks (or, outside a git checkout, the tree without build output)."""
    version = project_version()
    base = f"{NAME}-{version}"
    try:
        names = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, check=True, capture_output=True
                               ).stdout.decode().split("\0")
        names = [n for n in names if n and (ROOT / n).is_file()]
    except (OSError, subprocess.CalledProcessError):
        skip = {".git", "build", "__pycache__"}
        names = [p.relative_to(ROOT).as_posix() for p in sorted(ROOT.rglob("*"))
                 if p.is_file() and not skip.intersection(p.relative_to(ROOT).parts)
                 and not p.relative_to(ROOT).parts[0].startswith("build")]
    name = f"{base}.tar.gz"
    with tempfile.TemporaryDirectory() as tmp:
        write_dist_info(pathlib.Path(tmp))
        pkg_info = (pathlib.Path(tmp) / dist_info_name() / "METADATA").read_bytes()
        with tarfile.open(pathlib.Path(sdist_directory) / name, "w:gz", format=tarfile.PAX_FORMAT) as t:
            for n in sorted(names):
                t.add(ROOT / n, arcname=f"{base}/{n}", recursive=False)
            info = tarfile.TarInfo(f"{base}/PKG-INFO")
            info.size = len(pkg_info)
            t.addfile(info, io.BytesIO(pkg_info))
    return name


# ---- used by CMake's install rules ------------------------------------------------------------

if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "dist-info":
        print(write_dist_info(pathlib.Path(sys.argv[2]), installer=sys.argv[3] if len(sys.argv) > 3 else None))
    elif len(sys.argv) == 3 and sys.argv[1] == "site-dir":
        print(site_dir(sys.argv[2]))
    else:
        sys.exit("usage: labctl_backend.py dist-info OUTDIR [INSTALLER] | site-dir PREFIX")
