"""Installing like a tool: the .deb's contents and control fields (built here with CPack, as
`make deb` does), and `pip install` into a venv (the in-tree PEP 517 backend). The install on a
second fresh machine is `make package-test` (tests/package/two-chroot.sh)."""
import os
import pathlib
import re
import subprocess
import sys

import pytest

from conftest import LABCTL, ROOT, run_labctl

BUILD = pathlib.Path(LABCTL).resolve().parent
PYTHON = "/usr/bin/python3"


def version():
    return run_labctl("--version").stdout.split()[-1]


@pytest.fixture(scope="module")
def deb(tmp_path_factory):
    out = tmp_path_factory.mktemp("deb")
    r = subprocess.run(["cpack", "-G", "DEB", "-B", str(out), "--config", str(BUILD / "CPackConfig.cmake")],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    arch = subprocess.run(["dpkg", "--print-architecture"], capture_output=True, text=True).stdout.strip()
    path = out / f"labctl_{version()}_{arch}.deb"
    assert path.exists(), sorted(p.name for p in out.iterdir())
    return path


def control(deb):
    text = subprocess.run(["dpkg-deb", "-f", str(deb)], capture_output=True, text=True, check=True).stdout
    return dict(re.findall(r"^([A-Za-z-]+): (.*)$", text, re.M))


def test_deb_control_fields(deb):
    info = subprocess.run(["dpkg-deb", "-I", str(deb)], capture_output=True, text=True, check=True).stdout
    assert " postinst" in info and " prerm" in info
    c = control(deb)
    assert c["Package"] == "labctl" and c["Version"] == version()
    depends = [d.strip() for d in c["Depends"].split(",")]
    names = {d.split()[0] for d in depends}
    # Runtime libraries (from dpkg-shlibdeps) and the python3 the module is built for; no
    # compiler, no -dev package.
    assert {"libc6", "libstdc++6", "libmnl0"} <= names, depends
    py = f"{sys.version_info.major}.{sys.version_info.minor}"
    below = f"{sys.version_info.major}.{sys.version_info.minor + 1}"
    assert f"python3 (>= {py}~)" in depends and f"python3 (<< {below}~)" in depends
    assert not [n for n in names if n.endswith("-dev") or n in ("g++", "gcc", "cmake", "make")], depends
    assert [r.strip() for r in c["Recommends"].split(",")] == ["graphviz", "iproute2"]


def test_deb_files(deb):
    listing = subprocess.run(["dpkg-deb", "-c", str(deb)], capture_output=True, text=True, check=True).stdout
    files = {line.split()[-1].lstrip("."): line.split()[0] for line in listing.splitlines()}
    v = version()
    site = "/usr/lib/python3/dist-packages"
    soabi = subprocess.run([PYTHON, "-c", "import sysconfig; print(sysconfig.get_config_var('EXT_SUFFIX'))"],
                           capture_output=True, text=True).stdout.strip()
    expected = [
        "/usr/bin/labctl",
        f"{site}/labctl/__init__.py", f"{site}/labctl/pytest_plugin.py", f"{site}/labctl/_core{soabi}",
        f"{site}/labctl-{v}.dist-info/METADATA", f"{site}/labctl-{v}.dist-info/entry_points.txt",
        "/usr/share/man/man1/labctl.1",
        "/usr/share/bash-completion/completions/labctl",
        "/usr/share/zsh/vendor-completions/_labctl",
        "/usr/share/fish/vendor_completions.d/labctl.fish",
        "/usr/share/labctl/topology.schema.json",
        "/usr/share/labctl/labs/quickstart/topology.json",
        "/usr/share/doc/labctl/README.md",
    ]
    for f in expected:
        assert f in files, f
    assert files["/usr/bin/labctl"] == "-rwxr-xr-x"
    for lab in (ROOT / "labs").iterdir():
        if lab.is_dir():
            assert f"/usr/share/labctl/labs/{lab.name}/topology.json" in files
    assert not [f for f in files if "__pycache__" in f or f.startswith("/usr/local")]
    # The entry point and the metadata, as importlib.metadata will read them.
    entry_points = f"./{site.lstrip('/')}/labctl-{v}.dist-info/entry_points.txt"
    out = subprocess.run(f"dpkg-deb --fsys-tarfile {deb} | tar -xO {entry_points}",
                         shell=True, capture_output=True, text=True, check=True).stdout
    assert "[pytest11]\nlabctl.pytest_plugin = labctl.pytest_plugin\n" in out


def test_deb_binaries_are_stripped(deb, tmp_path):
    subprocess.run(["dpkg-deb", "-x", str(deb), str(tmp_path)], check=True)
    for f in [tmp_path / "usr/bin/labctl", *(tmp_path / "usr/lib/python3/dist-packages/labctl").glob("*.so")]:
        r = subprocess.run(["file", str(f)], capture_output=True, text=True)
        assert "stripped" in r.stdout and "not stripped" not in r.stdout, r.stdout
    # The packaged files are the built ones: the same version and completion script.
    r = subprocess.run([str(tmp_path / "usr/bin/labctl"), "--version"], capture_output=True, text=True)
    assert r.stdout.strip() == f"labctl {version()}"
    assert (tmp_path / "usr/share/bash-completion/completions/labctl").read_text() == \
        run_labctl("completion", "bash").stdout


def clean_env(**extra):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME", "MANPATH")}
    env.update(extra)
    return env


def test_pip_install_into_a_venv(tmp_path):
    """pip install --no-build-isolation (offline) from the checkout, reusing this build tree;
    the venv then has the command, the package and the pytest plugin, loaded without -p."""
    venv = tmp_path / "venv"
    subprocess.run([PYTHON, "-m", "venv", "--system-site-packages", str(venv)], check=True, timeout=300)
    env = clean_env(PIP_NO_INDEX="1", PIP_DISABLE_PIP_VERSION_CHECK="1")
    r = subprocess.run([str(venv / "bin/pip"), "install", "--no-build-isolation", "--no-index",
                        "--config-settings", f"build-dir={BUILD}", str(ROOT)],
                       capture_output=True, text=True, env=env, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    v = version()
    r = subprocess.run([str(venv / "bin/labctl"), "--version"], capture_output=True, text=True)
    assert r.stdout.strip() == f"labctl {v}"
    r = subprocess.run(["file", "-L", str(venv / "bin/labctl")], capture_output=True, text=True)
    assert "stripped" in r.stdout and "not stripped" not in r.stdout, r.stdout
    py = str(venv / "bin/python")
    r = subprocess.run([py, "-c", "import labctl, importlib.metadata as m; "
                        "print(labctl.__file__); print(labctl.__version__); print(m.version('labctl'))"],
                       capture_output=True, text=True, env=env, cwd=tmp_path, check=True)
    file, mod_version, dist_version = r.stdout.split()
    assert file.startswith(str(venv)) and mod_version == dist_version == v
    r = subprocess.run([py, "-m", "pytest", "--help"], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert r.returncode == 0 and "--labctl-keep" in r.stdout
    # -p with the module's name still works (the entry point is named after the module).
    r = subprocess.run([py, "-m", "pytest", "-p", "labctl.pytest_plugin", "--fixtures"],
                       capture_output=True, text=True, env=env, cwd=tmp_path)
    assert r.returncode in (0, 5) and "lab_factory" in r.stdout, r.stdout[-2000:] + r.stderr[-2000:]
    # man finds the page next to the venv's bin/ (man-db maps PATH entries to ../share/man).
    r = subprocess.run(["man", "-w", "labctl"], capture_output=True, text=True,
                       env=clean_env(PATH=f"{venv}/bin:/usr/bin:/bin"))
    assert r.stdout.strip() == f"{venv}/share/man/man1/labctl.1"
    r = subprocess.run([str(venv / "bin/pip"), "uninstall", "-y", "labctl"], capture_output=True, text=True, env=env)
    assert r.returncode == 0 and not (venv / "bin/labctl").exists()
