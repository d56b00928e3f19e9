"""Docker backend: warm sandbox containers, each running one runner as pid 1.

A container is created with no network, a read-only root, a small tmpfs /tmp, memory
(swap included), CPU and pid limits, uid 10001, no capabilities, no-new-privileges and an
environment of our own (nothing from the host's). The runner package (the directory
pipeline/sandbox/runner/) is bind-mounted read-only at /opt/sandbox/runner and started as
`python3 -I -B /opt/sandbox/runner/__main__.py`; the image holds no project code. We talk
to the runner over the container's attached stdin/stdout (docker's multiplexed attach
stream, one socket to the daemon).

Every container carries the labels `org.pipeline.sandbox.owner` (host:pid) and
`org.pipeline.sandbox.pool`. With stdin_once, a container whose pipeline process died
sees end of input and exits (auto_remove removes it); `cleanup_stale` catches the rest.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import socket
import struct
import time
from typing import Any

from pipeline.config import SandboxConfig
from pipeline.sandbox.channel import RunnerChannel, SandboxDied, SandboxUnavailable

log = logging.getLogger(__name__)

#: The runner package on the host, where the sandbox sees it (read-only), and its start.
RUNNER_HOST_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "runner")
RUNNER_PATH = "/opt/sandbox/runner"
RUNNER_MAIN = f"{RUNNER_PATH}/__main__.py"
LABEL = "org.pipeline.sandbox"
OWNER_LABEL = "org.pipeline.sandbox.owner"
POOL_LABEL = "org.pipeline.sandbox.pool"
#: Memory for the runner itself (Python + pytest, warm) on top of the per-sample limit.
RUNNER_OVERHEAD_MB = 128
SANDBOX_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "HOME": "/tmp",
    "LANG": "C.UTF-8",
    "PYTHONDONTWRITEBYTECODE": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "MPLBACKEND": "Agg",
    "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1",
}
_HOST = socket.gethostname()


def check_runner() -> None:
    """SandboxUnavailable if the runner package is not where the sandboxes mount it from."""
    if not os.path.isfile(os.path.join(RUNNER_HOST_PATH, "__main__.py")):
        raise SandboxUnavailable(f"sandbox runner missing at {RUNNER_HOST_PATH}")


def daemon_url(cfg: SandboxConfig) -> str:
    return cfg.docker_host or os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"


def connect(cfg: SandboxConfig) -> Any:
    """A docker client that has answered a ping; SandboxUnavailable with the fix if not."""
    try:
        import docker
    except ImportError:
        raise SandboxUnavailable("the docker Python package is missing: pip install "
                                 "'docker>=7' (or set sandbox.backend)") from None
    client = None
    try:
        client = (docker.DockerClient(base_url=cfg.docker_host, timeout=60)
                  if cfg.docker_host else docker.from_env(timeout=60))
        client.ping()
    except Exception as exc:
        if client is not None:
            client.close()
        raise SandboxUnavailable(daemon_unreachable_message(cfg, exc)) from None
    return client


def daemon_unreachable_message(cfg: SandboxConfig, exc: BaseException) -> str:
    return (f"Docker daemon not reachable at {daemon_url(cfg)} — start it with `sudo "
            f"systemctl start docker` (or `dockerd &`), or set sandbox.backend "
            f"({type(exc).__name__}: {str(exc)[:200]})")


def _is_connection_error(exc: BaseException) -> bool:
    """The daemon did not answer at all (as opposed to answering with an error)."""
    import requests

    return isinstance(exc, (requests.exceptions.ConnectionError, ConnectionError))


def image_missing_message(image: str) -> str:
    return (f"sandbox image {image!r} not found — build it with `docker build -t {image} "
            f"sandbox/` (machines with a registry) or `bash sandbox/build-offline.sh "
            f"{image}` (without one), or set sandbox.image")


def check_image(cfg: SandboxConfig, client: Any = None) -> None:
    """Start-up check: the daemon answers and the configured image exists.

    Raises SandboxUnavailable whose message says how to start Docker or build the image.
    """
    import docker.errors

    client = client or connect(cfg)
    try:
        client.images.get(cfg.image)
    except docker.errors.ImageNotFound:
        raise SandboxUnavailable(image_missing_message(cfg.image)) from None
    except docker.errors.APIError as exc:
        raise SandboxUnavailable(f"cannot inspect sandbox image {cfg.image!r}: {exc}") from None


def container_memory_mb(cfg: SandboxConfig) -> int:
    """Container limit: the sample's memory, the runner, /tmp and /dev/shm (tmpfs is RAM)."""
    return cfg.memory_mb + RUNNER_OVERHEAD_MB + 2 * cfg.tmpfs_mb


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _labelled(client: Any, label: str) -> list[tuple[str, dict[str, str]]]:
    """(id, labels) of every container with `label`, from one list call.

    docker-py's `containers.list` inspects each container after listing; one that
    auto_remove deletes in between (another run's sandbox finishing) raises a 404.
    The list response already carries the labels, so nothing is inspected.
    """
    return [(c["Id"], c.get("Labels") or {})
            for c in client.api.containers(all=True, filters={"label": label})]


def _remove(client: Any, container_id: str) -> bool:
    try:
        client.api.remove_container(container_id, force=True)
        return True
    except Exception as exc:  # 404/409: already gone or going away
        log.debug("remove %s: %s", container_id[:12], exc)
        return False


def cleanup_stale(client: Any) -> int:
    """Remove sandbox containers left by dead pipeline processes on this host."""
    removed = 0
    for cid, labels in _labelled(client, LABEL):
        host, _, pid = (labels.get(OWNER_LABEL) or "").rpartition(":")
        if host != _HOST or not pid.isdigit() or _pid_alive(int(pid)):
            continue
        removed += _remove(client, cid)
    if removed:
        log.warning("removed %d sandbox container(s) left by a crashed run", removed)
    return removed


def remove_pool(client: Any, pool_id: str, timeout: float = 10.0) -> list[str]:
    """Force-remove every container of a pool; wait until they are gone. Returns leftovers."""
    deadline = time.monotonic() + timeout
    while True:
        left = [cid for cid, _ in _labelled(client, f"{POOL_LABEL}={pool_id}")]
        if not left or time.monotonic() > deadline:
            return [cid[:12] for cid in left]
        for cid in left:
            _remove(client, cid)
        time.sleep(0.05)


class _Demux:
    """Splits docker's attach stream (8-byte headers: stream, 0, 0, 0, size) into streams."""

    HEAD = struct.Struct(">BxxxI")

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        self._buf += data
        out: list[tuple[int, bytes]] = []
        while len(self._buf) >= self.HEAD.size:
            stream, n = self.HEAD.unpack_from(self._buf)
            if len(self._buf) < self.HEAD.size + n:
                break
            out.append((stream, bytes(self._buf[self.HEAD.size:self.HEAD.size + n])))
            del self._buf[:self.HEAD.size + n]
        return out


class DockerChannel(RunnerChannel):
    """One warm sandbox container and the attach socket to its runner."""

    def __init__(self, client: Any, cfg: SandboxConfig, labels: dict[str, str]) -> None:
        super().__init__()
        self._client = client
        self._demux = _Demux()
        api = client.api
        mem = f"{container_memory_mb(cfg)}m"
        host_config = api.create_host_config(
            network_mode="none", read_only=True,
            tmpfs={"/tmp": f"rw,nosuid,nodev,size={cfg.tmpfs_mb}m,mode=1777"},
            shm_size=f"{cfg.tmpfs_mb}m", mem_limit=mem, memswap_limit=mem,
            nano_cpus=int(cfg.cpus * 1e9), pids_limit=cfg.pids_limit,
            cap_drop=["ALL"], security_opt=["no-new-privileges"], init=False,
            binds={RUNNER_HOST_PATH: {"bind": RUNNER_PATH, "mode": "ro"}},
            auto_remove=True)
        try:
            self.id = api.create_container(
                cfg.image, command=["python3", "-I", "-B", RUNNER_MAIN, "--container"],
                user="10001:10001", stdin_open=True, detach=False, environment=SANDBOX_ENV,
                labels=labels, working_dir="/tmp", network_disabled=True,
                host_config=host_config, use_config_proxy=False)["Id"]
        except Exception as exc:
            if "No such image" in str(exc):
                raise SandboxUnavailable(image_missing_message(cfg.image)) from None
            if _is_connection_error(exc):  # the daemon went away since start-up
                raise SandboxUnavailable(daemon_unreachable_message(cfg, exc)) from None
            raise SandboxUnavailable(f"cannot create a sandbox container: {exc}") from None
        self.name = f"container {self.id[:12]}"
        try:
            raw = api.attach_socket(self.id, params={"stdin": 1, "stdout": 1, "stderr": 1,
                                                     "stream": 1})
            self._sock: socket.socket = getattr(raw, "_sock", raw)
            self._raw = raw
            api.start(self.id)
        except Exception as exc:
            self.close()
            raise SandboxUnavailable(f"cannot start a sandbox container: {exc}") from None

    def _send(self, data: bytes) -> None:
        self._sock.settimeout(30.0)
        self._sock.sendall(data)

    def _recv_some(self, timeout: float) -> bytes | None:
        ready, _, _ = select.select([self._sock], [], [], timeout)
        if not ready:
            return b""
        self._sock.setblocking(False)
        try:
            data = self._sock.recv(1 << 20)
        except BlockingIOError:
            return b""
        if not data:
            return None
        out = bytearray()
        for stream, payload in self._demux.feed(data):
            if stream == 1:
                out += payload
            else:
                self._note_diag(payload.decode("utf-8", errors="replace"))
        return bytes(out)

    def kill(self) -> None:
        """Kill the container (tests use this to simulate a crash)."""
        self._client.api.kill(self.id)

    def close(self) -> None:
        self.dead = True
        sock = getattr(self, "_sock", None)
        if sock is not None:  # wakes a thread that waits on it; close() alone would not
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        for obj in (getattr(self, "_raw", None), sock):
            try:
                if obj is not None:
                    obj.close()
            except OSError:
                pass
        try:
            self._client.api.remove_container(self.id, force=True)
        except Exception as exc:  # 404/409: auto_remove is removing it already
            log.debug("remove %s: %s", self.id[:12], exc)


class DockerBackend:
    """Creates `DockerChannel`s for one pool and removes them all at the end."""

    def __init__(self, cfg: SandboxConfig, pool_id: str) -> None:
        self.cfg = cfg
        self.pool_id = pool_id
        self.labels = {LABEL: "1", OWNER_LABEL: f"{_HOST}:{os.getpid()}", POOL_LABEL: pool_id}
        self.client: Any = None

    def connect(self) -> None:
        """Ping the daemon, check the image, remove containers of crashed runs."""
        check_runner()
        self.client = connect(self.cfg)
        check_image(self.cfg, self.client)
        cleanup_stale(self.client)

    def environment(self) -> str:
        """What besides the request decides a verdict: the image's content id."""
        return f"docker:{self.client.images.get(self.cfg.image).id}"

    def start_channel(self) -> DockerChannel:
        if self.client is None:
            self.connect()
        ch = DockerChannel(self.client, self.cfg, self.labels)
        try:
            ch.wait_ready()
        except SandboxDied as exc:
            ch.close()
            raise SandboxUnavailable(f"a sandbox container did not start its runner: {exc}"
                                     ) from None
        except BaseException:
            ch.close()
            raise
        return ch

    def close(self) -> list[str]:
        """Remove what is left of the pool; returns the ids that would not go."""
        if self.client is None:
            return []
        try:
            return remove_pool(self.client, self.pool_id)
        except Exception as exc:  # the daemon is gone: nothing to ask it
            if not _is_connection_error(exc):
                raise
            log.error("cannot remove the containers of sandbox pool %s: %s. Cut off from "
                      "us they see end of input and exit (auto-removed); `cleanup_stale` "
                      "removes any left at the next start", self.pool_id,
                      daemon_unreachable_message(self.cfg, exc))
            return [f"pool {self.pool_id} (daemon unreachable)"]
        finally:
            self.client.close()
            self.client = None
