"""The execution gate: run generated code against its tests in a sandbox.

- `SandboxPool`: warm Docker containers (or bubblewrap sandboxes, backend=process), each with
  a runner that forks per sample; see pool.py, docker_backend.py and the runner package
  (runner/).
- `run_records`: the `python -m pipeline sandbox` engine, JSON records in and out.
- `check_image`: the start-up check (daemon reachable, image present).
- `pipeline.stages.execute.ExecuteStage`: the pipeline stage on top of the pool.

The pool is imported on first use: the reply checks import the runner's definition of a
test (`pipeline.sandbox.runner.testcount`) while the config, which the pool needs, is
still being imported.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pipeline.sandbox.channel import SandboxDied, SandboxUnavailable

if TYPE_CHECKING:
    from pipeline.config import SandboxConfig
    from pipeline.sandbox.pool import SandboxPool, run_records


def __getattr__(name: str) -> Any:
    if name in ("SandboxPool", "run_records"):
        from pipeline.sandbox import pool

        return getattr(pool, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def check_image(cfg: SandboxConfig) -> None:
    """Start-up check for backend=docker: the daemon answers and `cfg.image` exists.

    Raises SandboxUnavailable whose message says how to start Docker or build the image.
    Does nothing for backend=process.
    """
    if cfg.backend != "docker":
        return
    from pipeline.sandbox import docker_backend

    client: Any = docker_backend.connect(cfg)
    try:
        docker_backend.check_image(cfg, client)
    finally:
        client.close()


__all__ = ["SandboxDied", "SandboxPool", "SandboxUnavailable", "check_image", "run_records"]
