"""Process backend (sandbox.backend=process): the runner in a bubblewrap sandbox, no Docker.

Each runner is the same runner package as in a container, started by `bwrap` as pid 1 of
fresh pid, network (loopback only), IPC, UTS, mount and user namespaces. Its file system is
an empty read-only root with read-only binds of /usr (and the /bin, /lib... links), the few
/etc files the dynamic loader needs, the pipeline's Python (prefix and virtualenv) and the
runner package's directory; /tmp and /dev/shm are size-limited tmpfs private to the
runner. The environment is ours (SANDBOX_ENV), nothing from the host's. The runner forks
per sample and applies RLIMIT_AS, RLIMIT_NPROC, RLIMIT_FSIZE and RLIMIT_CPU to it (see
runner/limits.py).

Identity: inside, the code runs as uid 10001 without capabilities, with no_new_privs. When
the pipeline runs as a normal user, bwrap maps that uid onto the user. When it runs as
root, uid 10001 is mapped onto `nobody` (65534) in a user namespace we prepare (root would
be exempt from RLIMIT_NPROC, and owner-readable files would be readable), and creating
further user namespaces is disabled.

Not contained, unlike Docker: no memory cgroup (memory is bounded per process by
RLIMIT_AS and per runner by RLIMIT_NPROC x RLIMIT_AS, so a sample is never OOM-killed as
a whole), no CPU quota, no seccomp filter. The libraries code can import are those of the
pipeline's own Python.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import select
import shutil
import signal
import subprocess
import sys
import threading

from pipeline.config import SandboxConfig
from pipeline.sandbox.channel import RunnerChannel, SandboxDied, SandboxUnavailable
from pipeline.sandbox.docker_backend import (
    RUNNER_HOST_PATH,
    RUNNER_MAIN,
    RUNNER_PATH,
    SANDBOX_ENV,
    check_runner,
)

log = logging.getLogger(__name__)

#: The uid and gid the code runs as inside (as in the image), and, when the pipeline runs
#: as root, the host uid they map onto.
SANDBOX_UID = 10001
HOST_UID_WHEN_ROOT = 65534
#: Host files under /etc that programs need (dynamic loader, /usr/bin alternatives).
ETC_FILES = ("ld.so.cache", "ld.so.conf", "ld.so.conf.d", "alternatives", "localtime")
#: Top-level links of a merged-/usr system, or directories on older ones.
ROOT_DIRS = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")
INSTALL_HINT = ("install bubblewrap (`sudo apt-get install bubblewrap`, `dnf install "
                "bubblewrap`), or set sandbox.backend=docker")
USERNS_HINT = ("user namespaces may be disabled: `sudo sysctl -w "
               "kernel.unprivileged_userns_clone=1` (Debian) or `sudo sysctl -w "
               "kernel.apparmor_restrict_unprivileged_userns=0` (Ubuntu 24.04), or set "
               "sandbox.backend=docker")
# Runs in a fresh user namespace: says "up", waits until the host has written the uid and
# gid maps, then (re-executed, so with the capabilities of the namespace's root) forbids
# nested user namespaces and says "ok".
_USERNS_SCRIPT = ("echo up && read _ && exec sh -c "
                  "'echo 0 > /proc/sys/user/max_user_namespaces && echo ok && exec cat'")


def _python_dirs() -> list[str]:
    """Directories that hold the pipeline's interpreter and its packages."""
    exe = os.path.realpath(sys.executable)
    dirs = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix,
            os.path.dirname(os.path.dirname(exe))}
    out: list[str] = []
    for d in sorted(os.path.realpath(x) for x in dirs):
        if d in ("/", "/usr") or d.startswith("/usr/") or any(
                d == o or d.startswith(o + "/") for o in out):
            continue
        out.append(d)
    # sys.executable itself may be a link inside a virtualenv that we bind by its own path.
    venv = os.path.dirname(os.path.dirname(os.path.abspath(sys.executable)))
    if not venv.startswith("/usr/") and venv not in out and not any(
            venv.startswith(o + "/") for o in out):
        out.append(venv)
    return out


#: Host paths that the sandbox's own tmpfs mounts hide; Python installed below one of them
#: (a checkout in /tmp with its .venv, say) is bound under HIDDEN_PREFIX instead.
HIDDEN_DIRS = ("/tmp", "/dev/shm")
HIDDEN_PREFIX = "/run/host"


def sandbox_path(path: str) -> str:
    """Where a host path of the pipeline's Python appears inside the sandbox."""
    if any(path == h or path.startswith(h + "/") for h in HIDDEN_DIRS):
        return HIDDEN_PREFIX + path
    return path


def _parents(path: str) -> list[str]:
    parts = path.strip("/").split("/")[:-1]
    return ["/" + "/".join(parts[:i]) for i in range(1, len(parts) + 1)]


def bwrap_args(cfg: SandboxConfig, userns_fd: int | None,
               info_fd: int | None = None) -> list[str]:
    """The bwrap command line of one runner (`userns_fd`: a namespace we made, as root;
    `info_fd`: where bwrap writes the runner's pid)."""
    tmp_bytes = str(cfg.tmpfs_mb * 1024 * 1024)
    args = ["bwrap"] + ([] if info_fd is None else ["--info-fd", str(info_fd)])
    if userns_fd is None:
        args += ["--unshare-user", "--disable-userns", "--uid", str(SANDBOX_UID),
                 "--gid", str(SANDBOX_UID)]
    else:
        args += ["--userns", str(userns_fd)]
    args += ["--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts",
             "--unshare-cgroup-try", "--die-with-parent", "--as-pid-1", "--new-session",
             "--hostname", "sandbox", "--clearenv"]
    for k, v in SANDBOX_ENV.items():
        args += ["--setenv", k, v]
    binds = [(d, sandbox_path(d)) for d in ["/usr", *_python_dirs()]]
    binds += [(f"/etc/{f}", f"/etc/{f}") for f in ETC_FILES if os.path.exists(f"/etc/{f}")]
    binds.append((RUNNER_HOST_PATH, RUNNER_PATH))
    made: set[str] = set()
    for _, dest in binds:
        for p in _parents(dest):
            if p not in made and not any(p == d or p.startswith(d + "/") for _, d in binds):
                made.add(p)
                args += ["--perms", "0755", "--dir", p]
    for src, dest in binds:
        args += ["--ro-bind", src, dest]
    for d in ROOT_DIRS:
        if os.path.islink(f"/{d}"):
            args += ["--symlink", os.readlink(f"/{d}"), f"/{d}"]
        elif os.path.isdir(f"/{d}"):
            args += ["--ro-bind", f"/{d}", f"/{d}"]
    args += ["--proc", "/proc", "--dev", "/dev",
             "--perms", "1777", "--size", tmp_bytes, "--tmpfs", "/tmp",
             "--perms", "1777", "--size", tmp_bytes, "--tmpfs", "/dev/shm",
             "--remount-ro", "/dev", "--remount-ro", "/", "--chdir", "/tmp"]
    python = sandbox_path(os.path.abspath(sys.executable))
    runner = [python, "-I", "-B", RUNNER_MAIN, "--container"]
    if userns_fd is not None:
        # bwrap keeps the namespace root's capabilities for us; setpriv drops them all.
        # (Changing the uid also clears --die-with-parent: ProcessChannel.kill kills the
        # runner by its pid.)
        runner = [shutil.which("setpriv") or "setpriv", f"--reuid={SANDBOX_UID}",
                  f"--regid={SANDBOX_UID}", "--clear-groups", "--inh-caps=-all",
                  "--bounding-set=-all", "--no-new-privs", "--", *runner]
    return [*args, "--", *runner]


def make_userns() -> int:
    """As root: a user namespace mapping 0 to root (for bwrap's mounts) and SANDBOX_UID to
    nobody, with nested user namespaces disabled. Returns an fd that keeps it alive."""
    helper = subprocess.Popen(["unshare", "--user", "--", "sh", "-c", _USERNS_SCRIPT],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, env={"PATH": SANDBOX_ENV["PATH"]})
    assert helper.stdin is not None and helper.stdout is not None
    try:
        if helper.stdout.readline() != b"up\n":
            raise OSError("unshare --user failed")
        for name in ("uid_map", "gid_map"):
            with open(f"/proc/{helper.pid}/{name}", "w") as f:
                f.write(f"0 0 1\n{SANDBOX_UID} {HOST_UID_WHEN_ROOT} 1\n")
        helper.stdin.write(b"go\n")
        helper.stdin.flush()
        if helper.stdout.readline() != b"ok\n":
            raise OSError("cannot disable nested user namespaces")
        return os.open(f"/proc/{helper.pid}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        helper.kill()
        err = helper.stderr.read().decode(errors="replace").strip() if helper.stderr else ""
        raise SandboxUnavailable(f"cannot create a user namespace ({exc}; {err[:300]}) — "
                                 f"{USERNS_HINT}") from None
    finally:
        helper.kill()
        helper.wait()
        for f in (helper.stdin, helper.stdout, helper.stderr):
            with contextlib.suppress(OSError):
                f.close()  # type: ignore[union-attr]


class ProcessChannel(RunnerChannel):
    """A runner in its own bubblewrap sandbox."""

    def __init__(self, cfg: SandboxConfig) -> None:
        super().__init__()
        self._pidfd: int | None = None
        # close() can race with itself: the pool closing while a sample's thread discards
        # the same dead runner. The pidfd must be closed once, and never signalled after.
        self._lock = threading.RLock()
        self._closed = False
        userns = make_userns() if os.geteuid() == 0 else None
        info_r, info_w = os.pipe()
        fds = (info_w,) if userns is None else (info_w, userns)
        try:
            self._proc = subprocess.Popen(
                bwrap_args(cfg, userns, info_w), stdin=subprocess.PIPE,
                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                env={"PATH": SANDBOX_ENV["PATH"]}, cwd="/", pass_fds=fds,
                start_new_session=True)
        except OSError as exc:
            os.close(info_r)
            raise SandboxUnavailable(f"cannot run bwrap ({exc}) — {INSTALL_HINT}") from None
        finally:
            for fd in fds:
                os.close(fd)
        self.name = f"bwrap runner {self._proc.pid}"
        with os.fdopen(info_r, "rb") as f:  # closed by bwrap once the runner is started
            info = f.read()
        with contextlib.suppress(ValueError, OSError):
            # A pidfd: the runner can be killed without bwrap, and never a recycled pid.
            self._pidfd = os.pidfd_open(int(json.loads(info)["child-pid"]))

    def _send(self, data: bytes) -> None:
        assert self._proc.stdin is not None
        self._proc.stdin.write(data)
        self._proc.stdin.flush()

    def _recv_some(self, timeout: float) -> bytes | None:
        assert self._proc.stdout is not None and self._proc.stderr is not None
        out, err = self._proc.stdout.fileno(), self._proc.stderr.fileno()
        ready, _, _ = select.select([out, err], [], [], timeout)
        if err in ready:
            self._note_diag(os.read(err, 65536).decode("utf-8", errors="replace"))
        if out not in ready:
            return b""
        data = os.read(out, 1 << 20)
        return data or None

    def kill(self) -> None:
        """Kill the runner (pid 1 of its namespace: everything in it dies) and bwrap."""
        with self._lock:
            if self._pidfd is not None:
                with contextlib.suppress(OSError):
                    signal.pidfd_send_signal(self._pidfd, signal.SIGKILL)
            with contextlib.suppress(OSError):
                os.killpg(self._proc.pid, signal.SIGKILL)

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._close()

    def _close(self) -> None:
        self.dead = True
        if self._proc.stdin is not None:
            with contextlib.suppress(OSError):
                self._proc.stdin.close()  # end of input: the runner exits, the sandbox ends
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._proc.wait(timeout=2)
        self.kill()
        self._proc.wait()
        for f in (self._proc.stdout, self._proc.stderr):
            with contextlib.suppress(OSError):
                f.close()  # type: ignore[union-attr]
        if self._pidfd is not None:
            os.close(self._pidfd)
            self._pidfd = None


class ProcessBackend:
    """Creates `ProcessChannel`s; `connect` checks that bwrap can build a sandbox here."""

    def __init__(self, cfg: SandboxConfig, pool_id: str) -> None:
        self.cfg = cfg
        self.pool_id = pool_id

    def connect(self) -> None:
        """Check bwrap and namespaces with a throw-away sandbox; warn about what is weaker
        than Docker. Raises SandboxUnavailable with the fix."""
        check_runner()
        if shutil.which("bwrap") is None:
            raise SandboxUnavailable(f"sandbox.backend=process needs bubblewrap (bwrap): "
                                     f"{INSTALL_HINT}")
        userns = make_userns() if os.geteuid() == 0 else None
        try:
            args = bwrap_args(self.cfg, userns)
            probe = subprocess.run(
                [*args[:args.index("--") + 1], "/usr/bin/true"], capture_output=True,
                env={"PATH": SANDBOX_ENV["PATH"]}, timeout=30,
                pass_fds=() if userns is None else (userns,))
        finally:
            if userns is not None:
                os.close(userns)
        if probe.returncode != 0:
            err = probe.stderr.decode(errors="replace").strip()
            raise SandboxUnavailable(f"bwrap cannot create a sandbox here ({err[:300]}) — "
                                     f"{USERNS_HINT}")
        log.warning("sandbox.backend=process: code runs under bubblewrap (namespaces, no "
                    "network, read-only root, rlimits) but WITHOUT a memory cgroup, CPU "
                    "quota or seccomp filter; prefer backend=docker for untrusted code at "
                    "scale")

    def environment(self) -> str:
        """What besides the request decides a verdict: the host's Python and Node."""
        node = shutil.which("node") or ""
        return f"process:{sys.version}:{node}"

    def start_channel(self) -> ProcessChannel:
        ch = ProcessChannel(self.cfg)
        try:
            ch.wait_ready()
        except SandboxDied as exc:
            ch.close()
            raise SandboxUnavailable(f"the sandboxed runner did not start: {exc}") from None
        return ch

    def close(self) -> list[str]:
        return []
