"""A real OpenAI-compatible HTTP server on 127.0.0.1 with scripted replies and faults.

Fake the server, not the function: tests point the pipeline's own client at this server.
It serves POST /v1/chat/completions, POST /v1/completions and GET /v1/models.

Each request gets a `Reply`, taken from the `script` queue while it lasts, then from the
`handler` callable (default: an echo of the last user message). A reply can be a success,
an HTTP error (`Reply.error(500)`), a body that is not JSON (`Reply.garbage()`), a request
that never answers (`Reply.hang_forever()`), or a success after `delay_s`, with extra
`headers` (e.g. Retry-After). `kill()` stops the server mid-run: the port closes and open
connections are reset; `die_after = n` does the same by itself once n replies went out.
Handlers run on the server's event loop thread; `requests` holds every body received, and
`in_flight` / `max_in_flight` count requests being answered.

In-process (a background thread):

    with FakeOpenAIServer(script=[Reply.error(500)], latency_s=0.01) as srv:
        ...  # srv.base_url, srv.requests, srv.max_in_flight

In a separate process (benchmarks: the server must not share the client's GIL):

    python -m tests.fake_openai_server --latency 0.1      # prints "port <n>", serves
    FakeOpenAIServer.spawn(latency_s=0.1) -> SpawnedServer

Fixture: `fake_openai` (a running in-thread server, function scope). Register it for the
whole suite with `pytest_plugins = ["tests.fake_openai_server"]` in tests/conftest.py; the
LLM test modules define the same three-line fixture locally so they also run on their own.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import subprocess
import sys
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp import web

Handler = Callable[[dict[str, Any]], "Reply"]


@dataclass
class Reply:
    """What the server answers to one request."""

    text: str = "ok"
    status: int = 200
    finish_reason: str = "stop"
    prompt_tokens: int = 10
    completion_tokens: int = 5
    delay_s: float = 0.0
    body: bytes | None = None  # raw body instead of JSON (e.g. garbage)
    hang: bool = False
    headers: dict[str, str] | None = None

    @classmethod
    def ok(cls, text: str, **kw: Any) -> Reply:
        return cls(text=text, **kw)

    @classmethod
    def error(cls, status: int, message: str = "scripted error",
              headers: dict[str, str] | None = None) -> Reply:
        body = json.dumps({"error": {"message": message, "type": "fake", "code": status}})
        return cls(status=status, body=body.encode(), headers=headers)

    @classmethod
    def garbage(cls) -> Reply:
        return cls(body=b"<html>502 bad gateway, not json")

    @classmethod
    def hang_forever(cls) -> Reply:
        return cls(hang=True)


def echo_handler(request: dict[str, Any]) -> Reply:
    """Default reply: echo the last message (or prompt) so tests can match replies."""
    if "messages" in request:
        last = request["messages"][-1]["content"] if request["messages"] else ""
    else:
        last = request.get("prompt", "")
    return Reply(text=f"echo: {last}")


class FakeOpenAIServer:
    """The server in a background thread with its own event loop."""

    def __init__(
        self,
        handler: Handler | None = None,
        script: Iterable[Reply] = (),
        latency_s: float = 0.0,
        model: str = "fake-model",
        port: int = 0,
    ) -> None:
        self.handler: Handler = handler or echo_handler
        self.script: deque[Reply] = deque(script)
        self.latency_s = latency_s
        self.model = model
        self.port = port
        #: Every request body received, in arrival order (list append is thread safe).
        self.requests: list[dict[str, Any]] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.served = 0
        #: When set, the server kills itself (as `kill()`) when a request arrives after this
        #: many successful replies: those replies are delivered, nothing after them is.
        self.die_after: int | None = None
        self._dead = False
        self._transports: set[asyncio.BaseTransport] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/v1/completions", self._completions)
        app.router.add_get("/v1/models", self._models)
        return app

    async def _models(self, _request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [
            {"id": self.model, "object": "model", "owned_by": "fake"}]})

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, chat=True)

    async def _completions(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, chat=False)

    async def _serve(self, request: web.Request, chat: bool) -> web.StreamResponse:
        transport = request.transport
        if self.die_after is not None and self.served >= self.die_after and not self._dead:
            self._kill_now()
        if self._dead:
            if transport is not None:
                transport.abort()
            raise ConnectionResetError("server killed")
        body = json.loads(await request.read())
        self.requests.append(body)
        reply = self.script.popleft() if self.script else self.handler(body)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        if transport is not None:
            self._transports.add(transport)
        try:
            if reply.hang:
                await asyncio.Event().wait()
            delay = reply.delay_s or self.latency_s
            if delay:
                await asyncio.sleep(delay)
            if self._dead:
                raise ConnectionResetError("server killed")
            return self._respond(body, reply, chat)
        finally:
            self.in_flight -= 1
            self._transports.discard(transport)  # type: ignore[arg-type]

    def _respond(self, body: dict[str, Any], reply: Reply, chat: bool) -> web.Response:
        if reply.body is not None:
            ctype = "application/json" if reply.status != 200 else "text/html"
            return web.Response(status=reply.status, body=reply.body, content_type=ctype,
                                headers=reply.headers)
        usage = {"prompt_tokens": reply.prompt_tokens,
                 "completion_tokens": reply.completion_tokens,
                 "total_tokens": reply.prompt_tokens + reply.completion_tokens}
        if chat:
            choice: dict[str, Any] = {"index": 0, "finish_reason": reply.finish_reason,
                                      "message": {"role": "assistant", "content": reply.text}}
        else:
            choice = {"index": 0, "finish_reason": reply.finish_reason, "text": reply.text}
        out = {"id": f"fake-{self.served}", "object": "chat.completion" if chat else
               "text_completion", "created": 0, "model": body.get("model", self.model),
               "choices": [choice], "usage": usage}
        self.served += 1
        return web.Response(status=reply.status, text=json.dumps(out),
                            content_type="application/json", headers=reply.headers)

    # -- lifecycle -------------------------------------------------------------------

    async def _start(self) -> None:
        self._runner = web.AppRunner(self.app(), access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        self._site = web.TCPSite(self._runner, "127.0.0.1", self.port, backlog=1024)
        await self._site.start()
        sock = self._site._server.sockets[0]  # type: ignore[union-attr]
        self.port = sock.getsockname()[1]

    def start(self) -> FakeOpenAIServer:
        """Start serving in a daemon thread; returns once the port is bound."""
        ready = threading.Event()
        self._loop = asyncio.new_event_loop()

        def run() -> None:
            assert self._loop is not None
            asyncio.set_event_loop(self._loop)
            self._loop.run_until_complete(self._start())
            ready.set()
            self._loop.run_forever()
            # stopped: cancel handlers still running (hung requests), then close the loop
            pending = asyncio.all_tasks(self._loop)
            for task in pending:
                task.cancel()
            self._loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            self._loop.close()

        self._thread = threading.Thread(target=run, name="fake-openai", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("fake OpenAI server did not start within 10 s")
        return self

    def _kill_now(self) -> None:
        self._dead = True
        if self._site is not None and self._site._server is not None:
            self._site._server.close()  # the port refuses new connections from now on
        for t in list(self._transports):
            t.abort()

    def kill(self) -> None:
        """Die mid-run: close the port and reset every open connection.

        Callable from any thread, also from a `handler` (which runs on the server's loop).
        """
        if self._loop is None:
            return
        try:
            on_server_loop = asyncio.get_running_loop() is self._loop
        except RuntimeError:
            on_server_loop = False
        if on_server_loop:
            self._kill_now()
            return

        async def kill_now() -> None:
            self._kill_now()

        asyncio.run_coroutine_threadsafe(kill_now(), self._loop).result(timeout=5)

    def stop(self) -> None:
        """Shut down and join the thread."""
        if self._loop is None or self._thread is None:
            return
        if not self._dead:
            self._loop.call_soon_threadsafe(self._kill_now)
        if self._runner is not None:
            fut = asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop)
            with contextlib.suppress(Exception):  # best effort on shutdown
                fut.result(timeout=5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        self._loop = None

    def __enter__(self) -> FakeOpenAIServer:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    @staticmethod
    def spawn(latency_s: float = 0.0, cpu: int | None = None) -> SpawnedServer:
        """Run the server in a separate process (optionally pinned to one CPU)."""
        cmd = [sys.executable, "-m", "tests.fake_openai_server", "--latency", str(latency_s)]
        if cpu is not None:
            cmd = ["taskset", "-c", str(cpu), *cmd]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line.startswith("port "):
            proc.kill()
            raise RuntimeError(f"fake server failed to start: {line!r}")
        return SpawnedServer(proc, int(line.split()[1]))


@dataclass
class SpawnedServer:
    """A fake server running in its own process."""

    proc: subprocess.Popen
    port: int

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()


@pytest.fixture
def fake_openai() -> Iterator[FakeOpenAIServer]:
    """A running fake server; script it through `.script`, `.handler`, `.latency_s`."""
    with FakeOpenAIServer() as srv:
        yield srv


def main() -> None:
    ap = argparse.ArgumentParser(description="Fake OpenAI-compatible server (echo replies).")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--latency", type=float, default=0.0, help="seconds before each reply")
    args = ap.parse_args()
    try:
        import uvloop
        loop = uvloop.new_event_loop()
    except ImportError:
        loop = asyncio.new_event_loop()
    srv = FakeOpenAIServer(latency_s=args.latency, port=args.port)
    srv._loop = loop
    loop.run_until_complete(srv._start())
    print(f"port {srv.port}", flush=True)
    loop.run_forever()


if __name__ == "__main__":
    main()
