"""Pure logic of the sandbox: frames, docker's attach demux, test splitting, verdicts.

No Docker, no subprocesses.
"""

from __future__ import annotations

import ast
import json
import struct

import pytest

from pipeline.config import SandboxConfig
from pipeline.record import ExecStatus, RejectReason
from pipeline.sandbox.docker_backend import _Demux, container_memory_mb, image_missing_message
from pipeline.sandbox.runner.evidence import decide
from pipeline.sandbox.runner.protocol import (
    FAILED,
    MEMORY,
    PASSED,
    TIMEOUT,
    FrameDecoder,
    encode_frame,
)
from pipeline.sandbox.runner.testcount import (
    count_tests,
    detect_style,
    pytest_source,
    split_tests,
)
from pipeline.sandbox.verdict import (
    RECORD_KEYS,
    execution_from_result,
    parse_status,
    public_record,
    reject_reason,
    sandbox_error_result,
)


def test_frame_roundtrip_byte_by_byte() -> None:
    objs = [{"op": "run", "code": "print('é')\n" * 3}, {"n": 1}, []]
    data = b"".join(encode_frame(o) for o in objs)
    dec = FrameDecoder()
    got: list[object] = []
    for i in range(len(data)):
        got += dec.feed(data[i:i + 1])
    assert got == objs
    assert dec.pending == 0


def test_frame_header_is_big_endian_length() -> None:
    frame = encode_frame({"a": 1})
    (n,) = struct.unpack(">I", frame[:4])
    assert n == len(frame) - 4 and json.loads(frame[4:]) == {"a": 1}


def test_frame_oversized_length_is_rejected() -> None:
    with pytest.raises(ValueError, match="exceeds"):
        FrameDecoder().feed(struct.pack(">I", 2**31) + b"x")


def test_demux_splits_streams_across_chunks() -> None:
    def chunk(stream: int, payload: bytes) -> bytes:
        return struct.pack(">BxxxI", stream, len(payload)) + payload

    data = chunk(1, b"hello") + chunk(2, b"oops") + chunk(1, b"")
    d = _Demux()
    got = d.feed(data[:3]) + d.feed(data[3:11]) + d.feed(data[11:])
    assert got == [(1, b"hello"), (2, b"oops"), (1, b"")]


MBPP_TESTS = """import math
assert f(1) == 2
assert f(2) == 3
x = f(3)
assert x == 4
"""


def test_split_counts_asserts_not_setup() -> None:
    units = split_tests(ast.parse(MBPP_TESTS))
    assert [is_test for _, is_test in units] == [False, True, True, False, True]
    assert count_tests(MBPP_TESTS) == ("asserts", 3)


def test_split_flattens_main_guard_and_counts_check_call() -> None:
    src = ("def check(candidate):\n    assert candidate(1) == 2\n\n"
           "if __name__ == '__main__':\n    check(f)\n    assert f(0) == 1\n")
    units = split_tests(ast.parse(src))
    assert [is_test for _, is_test in units] == [False, True, True]


def test_prints_and_unknown_calls_are_not_tests() -> None:
    assert count_tests("print(f(1))\nf(2)\n") == ("asserts", 0)


def test_style_detects_pytest_functions_and_classes() -> None:
    assert detect_style(ast.parse("import unittest\nclass Checks(unittest.TestCase):\n"
                                  "    def test_x(self):\n        pass\n")) == "pytest"
    assert detect_style(ast.parse("def test_a():\n    assert 1\n")) == "pytest"
    assert detect_style(ast.parse("class TestX:\n    def test_b(self):\n        pass\n")) \
        == "pytest"
    assert detect_style(ast.parse("def helper():\n    pass\nassert helper() is None\n")) \
        == "asserts"
    assert count_tests("class TestX:\n    def test_b(self):\n        pass\n"
                       "    def test_c(self):\n        pass\n") == ("pytest", 2)


def test_loops_raises_and_assert_calls_count_swallowing_try_does_not() -> None:
    src = ("cases = [(1, 2)]\nfor x, want in cases:\n    assert f(x) == want\n"
           "with pytest.raises(ValueError):\n    f(-1)\nnp.testing.assert_equal(f(1), 2)\n"
           "try:\n    assert f(0) == 1\nexcept AssertionError:\n    print('no')\n"
           "try:\n    assert f(0) == 1\nexcept KeyError:\n    pass\n")
    units = split_tests(ast.parse(src))
    assert [is_test for _, is_test in units] == [False, True, True, True, False, True]


def test_checkers_are_found_transitively_and_uncalled_ones_count_nothing() -> None:
    src = ("def same(a, b):\n    assert a == b\n\ndef check(g):\n    same(g(1), 2)\n\n"
           "check(f)\nresult = check(f)\n")
    assert count_tests(src) == ("asserts", 2)
    assert count_tests("def check(g):\n    assert g(1) == 2\n") == ("asserts", 0)


def test_test_named_function_called_with_arguments_is_a_helper() -> None:
    src = "def test_add(func):\n    assert func(1, 2) == 3\n\ntest_add(add)\n"
    assert count_tests(src) == ("asserts", 1)
    mixed = src + "\ndef test_zero():\n    test_add(add)\n"
    assert count_tests(mixed) == ("pytest", 1)


def test_pytest_source_leaves_script_runners_to_pytest() -> None:
    src = ("import unittest\n\nclass TestA(unittest.TestCase):\n    def test_a(self):\n"
           "        self.assertTrue(True)\n\ndef test_b():\n    helper_test(1)\n\n"
           "def helper_test(x):\n    assert x\n\ndef testing(x):\n    assert x\n\n"
           "test_b(); testing(1)\nunittest.main(\n    verbosity=2)\n")
    out = pytest_source(src).splitlines()
    assert out[:15] == src.splitlines()[:15]  # line numbers stay as they were
    assert out[15:18] == ["pass; testing(1)", "pass", ""]
    assert out[18:] == ["", "testing.__test__ = False"]  # helper_test is not collected
    assert count_tests(src) == ("pytest", 2)


def test_count_tests_of_unparseable_tests_is_zero() -> None:
    assert count_tests("assert (") == ("asserts", 0)


NONCE = "ab" * 16


@pytest.mark.parametrize(("evidence", "kw", "expected"), [
    ({"nonce": NONCE, "passed": 3, "total": 3}, {}, (PASSED, 3, 3)),
    ({"nonce": NONCE, "passed": 2, "total": 3, "error": "x"}, {}, (FAILED, 2, 3)),
    ({"nonce": NONCE, "passed": 2, "total": 3}, {}, (FAILED, 2, 3)),
    ({"nonce": NONCE, "passed": 0, "total": 0}, {"tests_total": 0}, (FAILED, 0, 0)),
    ({"nonce": NONCE, "passed": 0, "total": 1, "memory_error": True}, {}, (MEMORY, 0, 1)),
    # no evidence: the code exited early (os._exit(0)), whatever it printed
    (None, {}, (FAILED, 0, 4)),
    # evidence without this run's nonce is forged
    ({"nonce": "00" * 16, "passed": 4, "total": 4}, {}, (FAILED, 0, 4)),
    (None, {"timed_out": True}, (TIMEOUT, 0, 4)),
    ({"nonce": NONCE, "passed": 4, "total": 4}, {"timed_out": True}, (TIMEOUT, 0, 4)),
    (None, {"oom_killed": True}, (MEMORY, 0, 4)),
])
def test_decide(evidence: dict | None, kw: dict, expected: tuple) -> None:
    args = {"timed_out": False, "exit_desc": "exit code 0", "oom_killed": False,
            "tests_total": 4, **kw}
    status, passed, total, _ = decide(evidence, NONCE, **args)
    assert (status, passed, total) == expected


def test_status_to_reject_reason() -> None:
    assert reject_reason(ExecStatus.PASSED) is None
    assert reject_reason(ExecStatus.FAILED) is RejectReason.EXEC_FAILED
    assert reject_reason(ExecStatus.TIMEOUT) is RejectReason.EXEC_TIMEOUT
    assert reject_reason(ExecStatus.MEMORY_EXCEEDED) is RejectReason.EXEC_MEMORY
    assert reject_reason(ExecStatus.SANDBOX_ERROR) is RejectReason.SANDBOX_ERROR


def test_unknown_status_is_sandbox_error_never_failed() -> None:
    assert parse_status("weird") is ExecStatus.SANDBOX_ERROR
    ex = execution_from_result({"status": None})
    assert ex.status is ExecStatus.SANDBOX_ERROR


def test_public_record_has_exactly_the_documented_keys() -> None:
    rec = public_record(sandbox_error_result("a1", "daemon gone"))
    assert tuple(rec) == RECORD_KEYS
    assert rec["status"] == "sandbox_error" and "daemon gone" in rec["stderr"]


def test_container_memory_covers_sample_runner_and_tmpfs() -> None:
    cfg = SandboxConfig(memory_mb=512, tmpfs_mb=64)
    assert container_memory_mb(cfg) >= 512 + 2 * 64


def test_image_missing_message_says_how_to_build() -> None:
    msg = image_missing_message("pipeline-sandbox:2")
    assert "docker build -t pipeline-sandbox:2 sandbox/" in msg
    assert "bash sandbox/build-offline.sh" in msg


def test_bwrap_command_isolates_and_binds_only_what_the_runner_needs() -> None:
    import os

    from pipeline.sandbox.docker_backend import RUNNER_HOST_PATH, RUNNER_MAIN, RUNNER_PATH
    from pipeline.sandbox.process_backend import bwrap_args

    args = bwrap_args(SandboxConfig(backend="process", tmpfs_mb=32), None)
    flags = set(args)
    assert {"--unshare-user", "--disable-userns", "--unshare-pid", "--unshare-net",
            "--unshare-ipc", "--unshare-uts", "--clearenv", "--as-pid-1",
            "--die-with-parent", "--new-session"} <= flags
    binds = [(args[i + 1], args[i + 2]) for i, a in enumerate(args) if a == "--ro-bind"]
    assert (RUNNER_HOST_PATH, RUNNER_PATH) in binds
    assert "--bind" not in flags and "--dev-bind" not in flags  # nothing writable
    repo = os.path.dirname(os.path.dirname(RUNNER_HOST_PATH))
    assert not [s for s, _ in binds if s in ("/", "/home", "/root", repo)]
    i = args.index("/tmp", args.index("--tmpfs") - 1)
    assert args[i - 3:i + 1] == ["--size", str(32 * 1024 * 1024), "--tmpfs", "/tmp"]
    assert args[args.index("--remount-ro") + 1] in ("/dev", "/")
    assert args[-4:] == ["-I", "-B", RUNNER_MAIN, "--container"]


def test_python_under_tmp_is_bound_where_the_sandbox_tmpfs_does_not_hide_it(monkeypatch) -> None:
    # A checkout in /tmp (CI clones anywhere) keeps its .venv there; the sandbox mounts its
    # own /tmp, so that Python must appear under /run/host instead.
    from pipeline.sandbox import process_backend as pb

    monkeypatch.setattr(pb, "_python_dirs", lambda: ["/tmp/ci/.venv"])
    monkeypatch.setattr(pb.sys, "executable", "/tmp/ci/.venv/bin/python3")
    args = pb.bwrap_args(SandboxConfig(backend="process"), None)
    i = args.index("/tmp/ci/.venv")
    assert args[i - 1] == "--ro-bind" and args[i + 1] == "/run/host/tmp/ci/.venv"
    assert args[args.index("--") + 1] == "/run/host/tmp/ci/.venv/bin/python3"
    assert pb.sandbox_path("/opt/venv") == "/opt/venv"
