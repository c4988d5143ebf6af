"""Real Caffe as the test oracle: run Python code inside the Debian bullseye root with Debian's Caffe.

``docker/caffe_root.sh`` (``make caffe-root``) builds, once and outside the repository, a Debian bullseye root
with BVLC Caffe 1.0 (``python3-caffe``, CPU, OpenBLAS) on Python 3.9 and bullseye's numpy/protobuf/h5py.
A :class:`RootSession` runs Python scripts in it with ``chroot``: this checkout's ``glrl`` package is copied
into an exchange folder inside the root's ``/tmp`` (so the current code, not the copy installed when the root
was built, is what runs there), and files go both ways through that folder. Nothing of the host is mounted
into the root, so removing the exchange folder can never reach the host.

Bullseye's OpenBLAS (0.3.13) does not know CPUs newer than itself: on an AMD Zen 5 it reports
``Core: Barcelona`` and runs SSE-era kernels. Where it picks a core without AVX2 on a CPU that has AVX2 and
FMA, sessions set ``OPENBLAS_CORETYPE=Haswell`` (its AVX2 kernels): GLRL 256² through Caffe then took 1.77 s
instead of 2.35 s. ``$OPENBLAS_CORETYPE`` set here is passed on instead.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Union

from glrl import settings
from glrl.errors import GlrlError

ROOT_ENV = "GLRL_CAFFE_ROOT"
DEFAULT_ROOT = Path("/var/cache/glrl/caffe-root")
# Written last by docker/caffe_root.sh: a root without it is not (completely) built.
MARKER = "etc/glrl-caffe-root"
BUILD_HINT = "build it with 'make caffe-root' (about 5 minutes, once; needs root and Debian's package mirror)"
BLAS_CORE_ENV = "OPENBLAS_CORETYPE"
# OpenBLAS's names for cores whose kernels predate AVX2 (what it falls back to on CPUs it does not know).
PRE_AVX2_CORES = frozenset({"Barcelona", "Bobcat", "Bulldozer", "Piledriver", "Steamroller", "Excavator",
                            "Opteron", "Athlon", "Nehalem", "Sandybridge", "Core2", "Penryn", "Dunnington",
                            "Atom", "Prescott", "Katmai", "Coppermine", "Northwood"})
_blas_cores: Dict[Path, Optional[str]] = {}  # per root: the OPENBLAS_CORETYPE its sessions set, if any


def caffe_root(override: Optional[Union[str, Path]] = None) -> Path:
    """Where the root is: ``override``, else ``$GLRL_CAFFE_ROOT``, else /var/cache/glrl/caffe-root."""
    if override:
        return Path(override)
    return Path(os.environ.get(ROOT_ENV) or DEFAULT_ROOT)


def is_built(root: Optional[Union[str, Path]] = None) -> bool:
    """Whether a complete root (its marker written) is there."""
    return (caffe_root(root) / MARKER).is_file()


def root_info(root: Optional[Union[str, Path]] = None) -> Dict[str, str]:
    """The root's marker: ``recipe``, ``suite``, ``mirror``, ``built`` and one ``package <name>`` per package
    with its Debian version."""
    path = caffe_root(root)
    _check_built(path)
    info: Dict[str, str] = {}
    for line in (path / MARKER).read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep:
            info[key] = value
    return info


def _check_built(root: Path) -> None:
    if not (root / MARKER).is_file():
        raise GlrlError(f"the real-Caffe root is not built at {root}", hint=BUILD_HINT)


def _command_in_root(root: Path, cwd: str, variables: Dict[str, str], argv: Sequence[str]) -> List[str]:
    """``argv`` run in ``root`` from ``cwd`` (a path inside it) with exactly ``variables`` as environment."""
    return _chroot_prefix() + [str(root), "/usr/bin/env", "-i", "-C", cwd,
                               *(f"{k}={v}" for k, v in variables.items()), *argv]


def blas_core(root: Optional[Union[str, Path]] = None) -> Optional[str]:
    """The OPENBLAS_CORETYPE sessions in the root use: ``$OPENBLAS_CORETYPE`` if set here, else Haswell where
    the root's OpenBLAS would pick a pre-AVX2 core on an AVX2+FMA CPU, else None (OpenBLAS's own choice).
    The root is asked once per process."""
    if os.environ.get(BLAS_CORE_ENV):
        return os.environ[BLAS_CORE_ENV]
    path = caffe_root(root)
    if path not in _blas_cores:
        from glrl.machine import cpu_flags

        _blas_cores[path] = None
        if {"avx2", "fma"} <= (cpu_flags() or frozenset()):
            probe = ["python3", "-c", "import numpy; numpy.ones((8, 8)) @ numpy.ones((8, 8))"]
            done = subprocess.run(_command_in_root(path, "/", {"PATH": "/usr/bin:/bin", "OPENBLAS_VERBOSE": "2"},
                                                   probe), capture_output=True, text=True, timeout=120, check=False)
            said = (done.stderr + done.stdout).split("Core:")
            if len(said) > 1 and said[1].split()[0] in PRE_AVX2_CORES:
                _blas_cores[path] = "Haswell"
    return _blas_cores[path]


def _chroot_prefix() -> List[str]:
    """``chroot`` as root; elsewhere inside a user namespace where this user is root."""
    if os.geteuid() == 0:
        return ["chroot"]
    if shutil.which("unshare") is None:
        raise GlrlError("running code in the real-Caffe root needs root or 'unshare' (util-linux)",
                        hint="run the oracle tests as root, or install util-linux")
    return ["unshare", "--map-root-user", "chroot"]


class RootSession:
    """An exchange folder inside the root, and scripts run there with the current ``glrl`` importable.

    Use as a context manager; ``path`` is the folder as seen from here, ``inside`` as seen in the root, and
    scripts run with it as their working directory, so they name exchanged files relatively. The copied
    package sits in ``<exchange>/python``, so the exchange folder is its repository root: ``include`` names
    checkout folders (``models``, ``prototxt``) to copy beside it for code that looks for them there::

        with RootSession() as session:
            numpy.save(session.path / "x.npy", x)
            session.run_python("import numpy; numpy.save('y.npy', numpy.load('x.npy') * 2)")
            y = numpy.load(session.path / "y.npy")
    """

    def __init__(self, root: Optional[Union[str, Path]] = None, threads: int = 1,
                 include: Sequence[str] = ()) -> None:
        self.root = caffe_root(root)
        self.threads = threads
        self.include = tuple(include)
        self._path: Optional[Path] = None

    @property
    def path(self) -> Path:
        if self._path is None:
            raise GlrlError("RootSession used outside its 'with' block")
        return self._path

    @property
    def inside(self) -> str:
        return "/" + str(self.path.relative_to(self.root))

    def __enter__(self) -> "RootSession":
        _check_built(self.root)
        self._path = Path(tempfile.mkdtemp(prefix="glrl-oracle-", dir=self.root / "tmp"))
        shutil.copytree(settings.PACKAGE_DIR, self._path / "python" / "glrl",
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        for name in self.include:
            source = settings.REPO_ROOT / name
            if not source.is_dir():
                raise GlrlError(f"{source} is not a folder of this checkout",
                                hint="include only checkout folders such as models or prototxt")
            shutil.copytree(source, self._path / name)
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._path is not None:
            shutil.rmtree(self._path, ignore_errors=True)
            self._path = None

    def run_python(self, script: str, env: Optional[Dict[str, str]] = None, timeout: float = 900.0) -> str:
        """Run ``script`` with the root's Python 3.9 and real Caffe; return its standard output."""
        (self.path / "_script.py").write_text(script)
        return self.run(["python3", "_script.py"], env=env, timeout=timeout)

    def run(self, argv: Sequence[str], env: Optional[Dict[str, str]] = None, timeout: float = 900.0) -> str:
        """Run a command in the root (e.g. ``["python3", "-m", "glrl", "eval", ...]``) in the exchange folder,
        with ``env`` added to a clean environment; return its standard output.

        Caffe's own logging is limited to errors. A failing command raises :class:`GlrlError` with the end of
        its standard error (of its standard output when it wrote no errors, as pytest).
        """
        variables = {
            "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "HOME": "/root",
            "LANG": "C.UTF-8",
            "PYTHONPATH": f"{self.inside}/python",
            "PYTHONDONTWRITEBYTECODE": "1",
            "MPLBACKEND": "Agg",
            "GLOG_minloglevel": "2",
            "OPENBLAS_NUM_THREADS": str(self.threads),
            "OMP_NUM_THREADS": str(self.threads),
        }
        core = blas_core(self.root)
        if core:
            variables[BLAS_CORE_ENV] = core
        variables.update(env or {})
        command = _command_in_root(self.root, self.inside, variables, argv)
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
        except subprocess.TimeoutExpired as exc:
            raise GlrlError(f"'{' '.join(argv)}' in the real-Caffe root ran past {timeout:.0f} s",
                            hint="make the comparison smaller or pass a larger timeout") from exc
        if done.returncode != 0:
            tail = "\n".join((done.stderr.strip() or done.stdout.strip()).splitlines()[-30:])
            raise GlrlError(f"'{' '.join(argv)}' in the real-Caffe root {self.root} failed "
                            f"(exit status {done.returncode}):\n{tail}",
                            hint=f"if the root itself is broken, remove {self.root} and run "
                                 "'make caffe-root'")
        return done.stdout

