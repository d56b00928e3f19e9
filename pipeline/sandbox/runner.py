"""The sandbox runner: a warm Python process that runs one sample at a time.

It runs INSIDE the sandbox (a container: Python 3.11, Debian bookworm; or a bubblewrap
sandbox for backend=process), standard library only; the host bind-mounts this one file
read-only at /opt/sandbox/runner.py and imports it for the frame codec and the test
splitter, so it must stay a single self-contained script.

Protocol: length-prefixed JSON frames (4-byte big-endian length, UTF-8 JSON) on the
runner's stdin/stdout. The runner first sends {"op": "ready"}; then, for every
{"op": "run", "id", "code", "tests", "timeout_s", "memory_mb", "output_limit"} (optional:
"fsize_mb" for RLIMIT_FSIZE, "nproc" for RLIMIT_NPROC, "language": "python" by default
or "javascript") it answers one result frame {"id", "status", "duration_s",
"tests_passed", "tests_total", "stdout", "stderr", "detail"}; {"op": "exit"} or end of
input stops it.

Per sample the runner forks a child (a clean copy of this warm process, pytest and common
modules already imported), which sets its own rlimits (RLIMIT_AS = memory_mb, so an
oversized allocation raises MemoryError; processes that together exhaust the container's
memory are killed by the kernel, the sample's first, and the cgroup's OOM counter says so),
runs the code and the tests, and finally writes the verdict evidence
(counts plus a per-run random nonce) to a pipe that only the runner reads. The verdict
comes from that evidence, never from the exit code or stdout: code that exits early,
closes stdout or prints "passed" leaves no evidence and is `failed`. (Code that walks the
interpreter's memory to find the nonce could forge it; the gate is for generated code, not
for a determined attacker, whom the container still confines.)

Tests: if they define test_* functions or Test*/TestCase classes they run under pytest
(counts from a plugin); otherwise each top-level statement runs in the solution's
namespace and every `assert` (or call of a tests-defined checker like HumanEval's
`check(f)`) counts as one test (see `split_tests`).

JavaScript: a request with "language": "javascript" carries "tests" as a list of
[statement, counts as a test, line] (split by the host with tree-sitter, see
pipeline/languages/javascript.py). The child writes the solution, the tests and
`JS_HARNESS` to the work directory and execs `node` with the evidence pipe inherited; the
harness runs the solution as a script, then each statement in try/catch, with node's
`assert` module as a global, and writes the evidence (counts and the nonce, which it reads
from a file and deletes before any sample code runs) only at the end. V8 reserves far
more address space than it uses, so node gets RLIMIT_DATA (writable memory) = memory_mb
instead of RLIMIT_AS, and a V8 heap limit of half of it, so that a growing heap ends in
V8's own "heap out of memory" (reported as memory_exceeded) rather than a crash.

Timeouts: the child is killed when `timeout_s` has passed in which it was running or
blocked by itself, i.e. wall time minus the time it waited for a CPU (the run-queue delay
in /proc/<pid>/schedstat). A passing sample therefore still passes when other work keeps
the CPUs busy; `STARVATION_CAP` x timeout_s bounds the wall time whatever the load.
After each sample every process but the runner is killed and /tmp and /dev/shm are wiped.
"""

from __future__ import annotations

import ast
import contextlib
import gc
import json
import os
import select
import signal
import stat
import struct
import sys
import time
import traceback
from typing import Any

HEADER = struct.Struct(">I")
MAX_FRAME_BYTES = 256 * 1024 * 1024
#: Wall-clock cap on one sample, as a multiple of its timeout, however starved it is.
STARVATION_CAP = 3.0
CONTAINER_WORK_DIR = "/tmp/work"
CONTAINER_WIPE_DIRS = ("/tmp", "/dev/shm")
#: Modules imported by the runner before it forks, so samples do not pay for them.
WARM_MODULES = ("pytest", "re", "math", "collections", "itertools", "functools", "heapq",
                "bisect", "string", "typing", "operator", "random", "datetime", "decimal",
                "fractions", "statistics", "dataclasses", "copy", "json")
#: Tracebacks sent back as evidence are cut to this many characters.
DETAIL_CHARS = 4000
#: Capacity asked for the sample's stdout and stderr pipes (Linux's default maximum).
PIPE_BYTES = 1 << 20

PASSED, FAILED, TIMEOUT, MEMORY, SANDBOX_ERROR = (
    "passed", "failed", "timeout", "memory_exceeded", "sandbox_error")
#: The `style` of a javascript sample (Python samples: 'pytest' or 'asserts').
NODE = "node"
#: Share of memory_mb that V8's heap may take (--max-old-space-size); see the docstring.
NODE_HEAP_SHARE = 0.5
#: What node writes to stderr when it runs out of memory and aborts.
NODE_OOM_MARKERS = ("JavaScript heap out of memory", "Fatal process OOM", "std::bad_alloc",
                    "Array buffer allocation failed")
#: node harness.cjs <evidence fd>, in the work directory with solution.js, tests.json and
#: the nonce file. Everything it relies on is captured before the sample's code runs.
JS_HARNESS = r"""'use strict';
const fs = require('fs');
const vm = require('vm');
const nodeAssert = require('assert');
const [writeSync, closeSync, stringify] = [fs.writeSync, fs.closeSync, JSON.stringify];
const runScript = vm.runInThisContext;
const exit = process.exit.bind(process);
const evidenceFd = Number(process.argv[2]);
const nonce = fs.readFileSync('nonce', 'utf8');
fs.unlinkSync('nonce');
const code = fs.readFileSync('solution.js', 'utf8');
const units = JSON.parse(fs.readFileSync('tests.json', 'utf8'));
const n = units.length;
const sources = units.map((u) => String(u[0]));
const counted = units.map((u) => Boolean(u[1]));
const lines = units.map((u) => Number(u[2]) || 1);
const MEMORY = /Array buffer allocation failed|out of memory/i;
Object.freeze(nodeAssert.strict);
Object.freeze(nodeAssert);
const sandboxModule = {exports: {}};
Object.assign(globalThis, {assert: nodeAssert, require, module: sandboxModule,
                           exports: sandboxModule.exports});
let passed = 0;
let total = 0;
let memory = false;
let errors = '';
function note(err, where) {
  let text = 'an error that cannot be printed';
  let summary = text;
  try {
    text = String(err && err.stack ? err.stack : err);
    summary = err instanceof Error ? err.name + ': ' + err.message : String(err);
  } catch (_) { /* keep what we have */ }
  if (MEMORY.test(text)) memory = true;
  try { process.stderr.write('[sandbox] ' + where + ' raised:\n' + text + '\n'); } catch (_) {}
  summary = (where + ': ' + summary).replace(/\s+/g, ' ').trim();
  errors += (errors ? '; ' : '') + summary.slice(0, 500);
}
let loaded = true;
try {
  runScript(code, {filename: 'solution.js'});
} catch (err) {
  note(err, 'the code');
  loaded = false;
}
for (let i = 0; loaded && i < n; i++) {
  if (counted[i]) total += 1;
  try {
    runScript(sources[i], {filename: 'tests.js', lineOffset: lines[i] - 1});
    if (counted[i]) passed += 1;
  } catch (err) {
    note(err, 'tests.js line ' + lines[i]);
  }
}
let evidence = '{"nonce":' + stringify(nonce) + ',"passed":' + passed + ',"total":' + total;
if (memory) evidence += ',"memory_error":true';
if (errors) evidence += ',"error":' + stringify(errors.slice(0, 4000));
writeSync(evidenceFd, evidence + '}');
closeSync(evidenceFd);
exit(0);
"""


# ---------------------------------------------------------------- frames


def encode_frame(obj: object) -> bytes:
    """One frame: 4-byte big-endian length, then the UTF-8 JSON of `obj`."""
    body = json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    if len(body) > MAX_FRAME_BYTES:
        raise ValueError(f"frame of {len(body)} bytes exceeds {MAX_FRAME_BYTES}")
    return HEADER.pack(len(body)) + body


class FrameDecoder:
    """Incremental decoder: feed bytes, get back the complete frames."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[object]:
        self._buf += data
        frames: list[object] = []
        while len(self._buf) >= HEADER.size:
            (n,) = HEADER.unpack_from(self._buf)
            if n > MAX_FRAME_BYTES:
                raise ValueError(f"frame length {n} exceeds {MAX_FRAME_BYTES}: stream corrupt")
            if len(self._buf) < HEADER.size + n:
                break
            body = bytes(self._buf[HEADER.size:HEADER.size + n])
            del self._buf[:HEADER.size + n]
            frames.append(json.loads(body.decode("utf-8")))
        return frames

    @property
    def pending(self) -> int:
        return len(self._buf)


def _read_exact(fd: int, n: int) -> bytes | None:
    chunks, got = [], 0
    while got < n:
        b = os.read(fd, n - got)
        if not b:
            return None
        chunks.append(b)
        got += len(b)
    return b"".join(chunks)


def read_frame(fd: int) -> object | None:
    """Blocking read of one frame from `fd`; None at end of input."""
    head = _read_exact(fd, HEADER.size)
    if head is None:
        return None
    (n,) = HEADER.unpack(head)
    if n > MAX_FRAME_BYTES:
        raise ValueError(f"frame length {n} exceeds {MAX_FRAME_BYTES}")
    body = _read_exact(fd, n)
    if body is None:
        return None
    return json.loads(body.decode("utf-8"))


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


# ---------------------------------------------------------------- tests


def _is_main_guard(node: ast.stmt) -> bool:
    """`if __name__ == "__main__":` at top level."""
    if not isinstance(node, ast.If) or node.orelse:
        return False
    t = node.test
    return (isinstance(t, ast.Compare) and isinstance(t.left, ast.Name)
            and t.left.id == "__name__" and len(t.comparators) == 1
            and isinstance(t.comparators[0], ast.Constant)
            and t.comparators[0].value == "__main__")


def _is_testcase(node: ast.ClassDef) -> bool:
    return any((isinstance(b, ast.Name) and b.id == "TestCase")
               or (isinstance(b, ast.Attribute) and b.attr == "TestCase") for b in node.bases)


def detect_style(tree: ast.Module) -> str:
    """'pytest' if the tests define test_* functions, Test* or unittest.TestCase classes;
    else 'asserts'."""
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) \
                and node.name.startswith("test"):
            return "pytest"
        if isinstance(node, ast.ClassDef) and (node.name.startswith("Test")
                                               or _is_testcase(node)):
            return "pytest"
    return "asserts"


def split_tests(tree: ast.Module) -> list[tuple[ast.stmt, bool]]:
    """Top-level statements of assert-style tests, each with whether it counts as a test.

    A test is a top-level `assert`, or a bare call of a function the tests define that
    asserts something (HumanEval's `check(candidate)`); other statements (imports,
    helpers, setup, `print(...)`) run but are not counted, so tests without a single
    assert find nothing to pass. The body of an `if __name__ == "__main__":` block is
    flattened into the top level.
    """
    body: list[ast.stmt] = []
    for node in tree.body:
        body.extend(node.body if _is_main_guard(node) else [node])  # type: ignore[attr-defined]
    checkers = {n.name for n in body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))
                and any(isinstance(x, ast.Assert) for x in ast.walk(n))}
    units: list[tuple[ast.stmt, bool]] = []
    for node in body:
        call = node.value if isinstance(node, ast.Expr) else None
        if isinstance(call, ast.Await):
            call = call.value
        is_test = isinstance(node, ast.Assert) or (
            isinstance(call, ast.Call) and isinstance(call.func, ast.Name)
            and call.func.id in checkers)
        units.append((node, is_test))
    return units


def count_tests(tests: str) -> tuple[str, int]:
    """(style, number of tests) of a tests source; ('asserts', 0) if it does not parse."""
    try:
        tree = ast.parse(tests)
    except (SyntaxError, ValueError):
        return "asserts", 0
    style = detect_style(tree)
    if style == "pytest":
        n = sum(1 for node in ast.walk(tree)
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
                and node.name.startswith("test"))
        return style, n
    return style, sum(1 for _, is_test in split_tests(tree) if is_test)


# ---------------------------------------------------------------- verdict


def decide(evidence: dict | None, nonce: str, *, timed_out: bool, exit_desc: str,
           oom_killed: bool, tests_total: int) -> tuple[str, int, int, str]:
    """Map what the runner observed to (status, tests_passed, tests_total, detail).

    Only evidence carrying this run's nonce shows that the tests ran to the end.
    """
    if timed_out:
        return TIMEOUT, 0, tests_total, "timed out"
    if evidence is None or evidence.get("nonce") != nonce:
        if oom_killed:
            return MEMORY, 0, tests_total, "the out-of-memory killer killed a process"
        why = "no evidence that the tests ran to the end" if evidence is None \
            else "evidence with a wrong nonce"
        return FAILED, 0, tests_total, f"{why} ({exit_desc})"
    passed = int(evidence.get("passed", 0))
    total = int(evidence.get("total") or tests_total)
    if evidence.get("memory_error"):
        return MEMORY, passed, total, "MemoryError"
    if oom_killed and (evidence.get("error") or passed != total):
        return MEMORY, passed, total, "the out-of-memory killer killed a process"
    if evidence.get("error"):
        return FAILED, passed, total, str(evidence["error"])
    if total == 0:
        return FAILED, 0, 0, "no tests found"
    if passed != total:
        return FAILED, passed, total, f"{total - passed} of {total} tests failed"
    return PASSED, passed, total, ""


# ---------------------------------------------------------------- child side


class _Collector:
    """pytest plugin: counts test outcomes in the child."""

    def __init__(self) -> None:
        self.collected = 0
        self.passed = 0
        self.failed = 0
        self.memory_error = False

    def pytest_collection_finish(self, session: Any) -> None:
        self.collected = len(session.items)

    def pytest_collectreport(self, report: Any) -> None:
        if report.failed:
            self.failed += 1
            self._look(report)

    def pytest_runtest_logreport(self, report: Any) -> None:
        if report.when == "call" and report.passed:
            self.passed += 1
        elif report.failed:
            self.failed += 1
            self._look(report)

    def _look(self, report: Any) -> None:
        if "MemoryError" in str(report.longrepr):
            self.memory_error = True


def _run_pytest(code: str, tests: str, work_dir: str) -> dict:
    import pytest

    with open(os.path.join(work_dir, "solution.py"), "w") as f:
        f.write(code)
    # The tests see the solution's names directly, as in a single file; `import solution`
    # works too.
    with open(os.path.join(work_dir, "test_solution.py"), "w") as f:
        f.write(code + "\n\n" + tests + "\n")
    col = _Collector()
    args = ["-q", "-s", "-p", "no:cacheprovider", "--rootdir", work_dir, "-o", "addopts=",
            "--tb=short", "-W", "ignore::DeprecationWarning",
            os.path.join(work_dir, "test_solution.py")]
    try:
        pytest.main(args, plugins=[col])
    except MemoryError:
        return {"memory_error": True, "passed": col.passed, "total": col.collected}
    except BaseException as exc:  # SystemExit and friends from the tested code
        return {"error": f"pytest aborted: {exc!r}", "passed": col.passed,
                "total": col.collected}
    ev: dict = {"passed": col.passed, "total": col.collected, "memory_error": col.memory_error}
    if col.failed:
        ev["error"] = f"{col.failed} test(s) or collection failed or errored"
    return ev


def _run_asserts(code: str, tests: str, work_dir: str) -> dict:
    import types

    mod = types.ModuleType("solution")
    mod.__file__ = os.path.join(work_dir, "solution.py")
    sys.modules["solution"] = mod
    with open(mod.__file__, "w") as f:
        f.write(code)
    test_file = os.path.join(work_dir, "tests.py")
    with open(test_file, "w") as f:
        f.write(tests)
    ev: dict = {"passed": 0, "total": 0}
    errors: list[str] = []

    def note(exc: BaseException, where: str) -> None:
        if isinstance(exc, MemoryError):
            ev["memory_error"] = True
        tb = exc.__traceback__
        while tb is not None and tb.tb_frame.f_code.co_filename == __file__:
            tb = tb.tb_next  # show the tested code's frames, not the runner's
        text = "".join(traceback.format_exception(type(exc), exc, tb))
        sys.stderr.write(f"[sandbox] {where} raised:\n{text}")
        errors.append(f"{where}: {type(exc).__name__}: {exc}"[:500])

    try:
        exec(compile(code, mod.__file__, "exec"), mod.__dict__)
    except BaseException as exc:
        note(exc, "the code")
        ev["error"] = errors[0]
        return ev
    try:
        units = split_tests(ast.parse(tests, test_file))
    except SyntaxError as exc:
        note(exc, "the tests")
        ev["error"] = errors[0]
        return ev
    for node, is_test in units:
        ev["total"] += is_test
        try:
            exec(compile(ast.Module(body=[node], type_ignores=[]), test_file, "exec"),
                 mod.__dict__)
        except BaseException as exc:
            note(exc, f"tests.py line {node.lineno}")
            continue
        ev["passed"] += is_test
    if errors:
        ev["error"] = "; ".join(errors)[:DETAIL_CHARS]
    return ev


def count_js_tests(units: object) -> int:
    """Counted tests of a javascript request's "tests"; ValueError if malformed."""
    if not isinstance(units, list) or not all(
            isinstance(u, list) and len(u) == 3 and isinstance(u[0], str) for u in units):
        raise ValueError("javascript tests must be a list of [statement, counted, line]")
    return sum(1 for u in units if u[1])


def _exec_node(req: dict, nonce: str, ev_w: int) -> None:
    """In the child, in the work directory: write the files and become node."""
    files = {"solution.js": req.get("code") or "", "harness.cjs": JS_HARNESS,
             "tests.json": json.dumps(req.get("tests") or [])}
    for name, text in files.items():
        with open(name, "w", encoding="utf-8") as f:
            f.write(text)
    fd = os.open("nonce", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    write_all(fd, nonce.encode("ascii"))
    os.close(fd)
    os.set_inheritable(ev_w, True)
    heap_mb = max(16, int(int(req["memory_mb"]) * NODE_HEAP_SHARE))
    os.execvp("node", ["node", f"--max-old-space-size={heap_mb}", "harness.cjs", str(ev_w)])


def _child(req: dict, style: str, nonce: str, work_dir: str, pipes: tuple[int, int, int],
           close_fds: set[int]) -> None:
    """Runs in the forked child; never returns."""
    out_w, err_w, ev_w = pipes
    try:
        os.setsid()
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        for fd in close_fds:
            os.close(fd)
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.dup2(out_w, 1)
        os.dup2(err_w, 2)
        for fd in (devnull, out_w, err_w):
            if fd > 2:
                os.close(fd)
        import resource

        mem = int(req["memory_mb"]) * 1024 * 1024
        # node: writable memory, not address space (see the module docstring).
        memory_limit = resource.RLIMIT_DATA if style == NODE else resource.RLIMIT_AS
        resource.setrlimit(memory_limit, (mem, mem))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        # A backstop only: the wall-clock deadline (at most STARVATION_CAP x timeout) comes
        # first; SIGXCPU counts as a timeout.
        cpu = int(float(req["timeout_s"]) * STARVATION_CAP) + 2
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
        if req.get("fsize_mb"):  # Python ignores SIGXFSZ: a bigger write raises OSError
            size = int(req["fsize_mb"]) * 1024 * 1024
            resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))
        if req.get("nproc"):  # processes (threads too) of our uid in our user namespace
            resource.setrlimit(resource.RLIMIT_NPROC, (int(req["nproc"]),) * 2)
        # If the container runs out of memory, the kernel kills the sample, not the runner.
        with contextlib.suppress(OSError), open("/proc/self/oom_score_adj", "w") as f:
            f.write("1000")
        os.makedirs(work_dir, exist_ok=True)
        os.chdir(work_dir)
        if style == NODE:
            _exec_node(req, nonce, ev_w)
        sys.path.insert(0, work_dir)
        os.environ["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"
        code, tests = req.get("code") or "", req.get("tests") or ""
        run = _run_pytest if style == "pytest" else _run_asserts
        ev = run(code, tests, work_dir)
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(BaseException):
                stream.flush()
        ev["nonce"] = nonce
        write_all(ev_w, json.dumps(ev, default=str).encode("utf-8"))
    except BaseException:
        pass
    os._exit(0)


# ---------------------------------------------------------------- runner side


class _Capture:
    """Reads one output pipe, keeping the first `limit` bytes and counting the rest."""

    def __init__(self, fd: int, limit: int) -> None:
        self.fd, self.limit = fd, limit
        self.data = bytearray()
        self.dropped = 0
        self.open = True

    def pump(self) -> None:
        try:
            b = os.read(self.fd, PIPE_BYTES)
        except BlockingIOError:
            return
        if not b:
            self.open = False
            return
        room = self.limit - len(self.data)
        if room > 0:
            self.data += b[:room]
        self.dropped += max(0, len(b) - max(room, 0))

    def text(self) -> str:
        s = self.data.decode("utf-8", errors="replace")
        if self.dropped:
            s += f"\n[sandbox] output truncated: {self.dropped} more bytes not kept"
        return s


def _run_delay_s(pid: int) -> float:
    """Seconds `pid` has waited on a run queue (0 if schedstat is unavailable)."""
    try:
        with open(f"/proc/{pid}/schedstat") as f:
            return int(f.read().split()[1]) / 1e9
    except (OSError, ValueError, IndexError):
        return 0.0


def _oom_kills() -> int:
    """OOM kills in this container's memory cgroup so far (v2 or v1), -1 if unknown."""
    for path, key in (("/sys/fs/cgroup/memory.events", "oom_kill"),
                      ("/sys/fs/cgroup/memory/memory.oom_control", "oom_kill")):
        try:
            with open(path) as f:
                for line in f:
                    k, _, v = line.partition(" ")
                    if k == key:
                        return int(v)
        except (OSError, ValueError):
            continue
    return -1


class Runner:
    """The runner's state: channel fds and the SIGCHLD wakeup pipe.

    The runner is pid 1 of its sandbox (a container, or a bubblewrap sandbox for
    backend=process) and owns the whole pid namespace, /tmp and /dev/shm.
    """

    def __init__(self, chan_in: int, chan_out: int) -> None:
        self.chan_in, self.chan_out = chan_in, chan_out
        self.work_dir = CONTAINER_WORK_DIR
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)
        os.set_blocking(self.wake_w, False)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        signal.set_wakeup_fd(self.wake_w, warn_on_full_buffer=False)

    def send(self, obj: object) -> None:
        write_all(self.chan_out, encode_frame(obj))

    def serve(self) -> None:
        self.send({"op": "ready", "python": sys.version.split()[0], "pid": os.getpid()})
        while True:
            req = read_frame(self.chan_in)
            if not isinstance(req, dict) or req.get("op") == "exit":
                return
            try:
                res = self.run(req)
            except Exception as exc:  # a runner bug must not look like failing code
                res = {"id": req.get("id"), "status": SANDBOX_ERROR, "duration_s": 0.0,
                       "tests_passed": 0, "tests_total": 0, "stdout": "",
                       "stderr": traceback.format_exc()[-DETAIL_CHARS:],
                       "detail": f"runner error: {exc!r}"}
                self.cleanup(None, None)
            self.send(res)

    def run(self, req: dict) -> dict:
        """Run one sample in a forked child and return its result frame."""
        timeout = float(req["timeout_s"])
        limit = int(req.get("output_limit", 65536))
        language = req.get("language", "python")
        if language == "javascript":
            import shutil

            style, tests_total = NODE, count_js_tests(req.get("tests"))
            if shutil.which("node") is None:
                raise RuntimeError("node (Node.js) is not installed in the sandbox: rebuild "
                                   "the image (sandbox/packages.txt lists nodejs), or install "
                                   "nodejs on this host for sandbox.backend=process")
        elif language == "python":
            style, tests_total = count_tests(req.get("tests") or "")
        else:
            raise ValueError(f"unknown language {language!r}")
        nonce = os.urandom(16).hex()
        self.cleanup(None, None)  # a fresh /tmp even if an earlier sample left a mess
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        for fd in (out_w, err_w):  # fewer, bigger reads when the code floods its output
            with contextlib.suppress(OSError, AttributeError):
                import fcntl

                fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, PIPE_BYTES)
        ev_r, ev_w = os.pipe()
        oom_before = _oom_kills()
        t0 = time.monotonic()
        pid = os.fork()
        if pid == 0:
            _child(req, style, nonce, self.work_dir, (out_w, err_w, ev_w),
                   {self.chan_in, self.chan_out, self.wake_r, self.wake_w, out_r, err_r, ev_r})
        for fd in (out_w, err_w, ev_w):
            os.close(fd)
        caps = [_Capture(out_r, limit), _Capture(err_r, limit), _Capture(ev_r, 1 << 20)]
        for c in caps:
            os.set_blocking(c.fd, False)
        status_word, timed_out = self._wait(pid, caps, t0, timeout)
        if status_word is not None and os.WIFSIGNALED(status_word) \
                and os.WTERMSIG(status_word) == signal.SIGXCPU:
            timed_out = True  # RLIMIT_CPU
        duration = time.monotonic() - t0
        self.cleanup(pid, caps)
        for c in caps:
            os.close(c.fd)
        try:
            evidence = json.loads(caps[2].data.decode("utf-8")) if caps[2].data else None
        except ValueError:  # two writers (the code forked) or a cut write
            evidence = None
        if status_word is None:
            exit_desc = "killed at the deadline"
        elif os.WIFSIGNALED(status_word):
            exit_desc = f"killed by signal {os.WTERMSIG(status_word)}"
        else:
            exit_desc = f"exit code {os.WEXITSTATUS(status_word)}"
        oom = oom_before >= 0 and _oom_kills() > oom_before
        status, passed, total, detail = decide(
            evidence if isinstance(evidence, dict) else None, nonce, timed_out=timed_out,
            exit_desc=exit_desc, oom_killed=oom, tests_total=tests_total)
        if timed_out:
            detail = f"timed out after {timeout:g} s"
        stderr = caps[1].text()
        if style == NODE and status == FAILED and detail.startswith("no evidence") \
                and any(marker in stderr for marker in NODE_OOM_MARKERS):
            status, detail = MEMORY, f"node ran out of memory ({exit_desc})"
        if status != PASSED and detail:
            stderr += f"\n[sandbox] {status}: {detail[:DETAIL_CHARS]}"
        return {"id": req.get("id"), "status": status, "duration_s": round(duration, 4),
                "tests_passed": passed, "tests_total": total, "stdout": caps[0].text(),
                "stderr": stderr, "detail": detail[:DETAIL_CHARS]}

    def _wait(self, pid: int, caps: list[_Capture], t0: float,
              timeout: float) -> tuple[int | None, bool]:
        """Pump the pipes until the child exits or runs out of time.

        Returns (wait status, or None if it was killed at the deadline; timed_out).
        """
        budget = timeout
        while True:
            done, status_word = os.waitpid(pid, os.WNOHANG)
            if done:
                return status_word, False
            now = time.monotonic() - t0
            if now >= budget:
                starved = _run_delay_s(pid)
                if now - starved >= timeout or now >= timeout * STARVATION_CAP:
                    _kill_group(pid)
                    return None, True
                budget = max(min(timeout + starved, timeout * STARVATION_CAP), now + 0.05)
            fds = [c.fd for c in caps if c.open] + [self.wake_r]
            ready, _, _ = select.select(fds, [], [], max(0.0, budget - now))
            for c in caps:
                if c.fd in ready:
                    c.pump()
            if self.wake_r in ready:
                with contextlib.suppress(BlockingIOError):
                    os.read(self.wake_r, 512)

    def cleanup(self, pid: int | None, caps: list[_Capture] | None) -> None:
        """Kill every process but the runner, reap them, drain the pipes, wipe scratch."""
        for _ in range(50):
            # We are pid 1 of the sandbox's pid namespace: -1 reaches every other process
            # in it, stray daemons and fork bombs included, in one go.
            with contextlib.suppress(ProcessLookupError):
                os.kill(-1, signal.SIGKILL)
            reaped = False
            while True:
                try:
                    p, _ = os.waitpid(-1, os.WNOHANG)
                except ChildProcessError:
                    p = 0
                if p <= 0:
                    break
                reaped = True
            if not reaped and not _other_pids():
                break
            time.sleep(0.001)
        if caps:
            # The writers are dead: read what is left.
            deadline = time.monotonic() + 5.0
            while any(c.open for c in caps) and time.monotonic() < deadline:
                fds = [c.fd for c in caps if c.open]
                ready, _, _ = select.select(fds, [], [], max(0.0, deadline - time.monotonic()))
                for c in caps:
                    if c.fd in ready:
                        c.pump()
        for d in CONTAINER_WIPE_DIRS:
            wipe_dir(d)


def _kill_group(pid: int) -> None:
    for kill, target in ((os.killpg, pid), (os.kill, pid)):
        with contextlib.suppress(OSError):
            kill(target, signal.SIGKILL)


def _other_pids() -> bool:
    me = os.getpid()
    try:
        return any(n.isdigit() and int(n) != me for n in os.listdir("/proc"))
    except OSError:
        return False


def wipe_dir(path: str) -> None:
    """Delete everything under `path` (not `path` itself), whatever the modes."""
    try:
        entries = os.listdir(path)
    except OSError:
        return
    for name in entries:
        p = os.path.join(path, name)
        try:
            st = os.lstat(p)
        except OSError:
            continue
        if stat.S_ISDIR(st.st_mode):
            with contextlib.suppress(OSError):
                os.chmod(p, 0o700)
            wipe_dir(p)
            with contextlib.suppress(OSError):
                os.rmdir(p)
        else:
            with contextlib.suppress(OSError):
                os.unlink(p)


def _nondumpable() -> None:
    """PR_SET_DUMPABLE 0: other processes of our uid cannot ptrace us or open /proc/1/fd."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(4, 0, 0, 0, 0)
    except Exception:
        pass


def main(argv: list[str] | None = None) -> None:
    """Serve frames on stdin/stdout.

    `--container` (required): we run as pid 1 of a sandbox's pid namespace, so after
    each sample we kill everything else and wipe /tmp and /dev/shm.
    """
    argv = sys.argv[1:] if argv is None else argv
    if "--container" not in argv or os.getpid() != 1:
        sys.exit("runner: needs --container and to run as pid 1 of a sandbox (container or "
                 "bubblewrap), since it kills every other process after each sample")
    chan_in, chan_out = os.dup(0), os.dup(1)
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(devnull, 1)
    os.close(devnull)
    _nondumpable()
    for name in WARM_MODULES:  # imported once here, shared by every forked child
        with contextlib.suppress(ImportError):
            __import__(name)
    gc.collect()
    gc.freeze()
    Runner(chan_in, chan_out).serve()


if __name__ == "__main__":
    main()
