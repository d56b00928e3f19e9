"""A JavaScript sample: the child writes its files and becomes node running harness.cjs.

The harness (a real file next to this one, read once per runner) runs the solution as a
script, then each test statement in try/catch, with node's `assert` module as the global
`assert`, and writes the evidence only at the end; it reads the nonce from a file and
deletes it before any sample code runs. V8 reserves far more address space than it uses,
so node gets RLIMIT_DATA (writable memory) = memory_mb instead of RLIMIT_AS (see
`limits`), and a V8 heap limit of `NODE_HEAP_SHARE` of it, so that a growing heap ends in
V8's own "heap out of memory" (reported as memory_exceeded) rather than a crash.
"""

from __future__ import annotations

import json
import os
import shutil
from functools import lru_cache

from .protocol import write_all

#: The `style` of a JavaScript sample (Python samples: 'pytest' or 'asserts').
NODE = "node"
#: Share of memory_mb that V8's heap may take (--max-old-space-size).
NODE_HEAP_SHARE = 0.5
HARNESS_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "harness.cjs")


@lru_cache(maxsize=1)
def harness() -> str:
    """The harness's source (read before the runner forks, so each child has it)."""
    with open(HARNESS_PATH, encoding="utf-8") as f:
        return f.read()


def check_node() -> None:
    """RuntimeError with the fix if there is no node to run JavaScript samples with."""
    if shutil.which("node") is None:
        raise RuntimeError("node (Node.js) is not installed in the sandbox: rebuild the "
                           "image (sandbox/packages.txt lists nodejs), or install nodejs on "
                           "this host for sandbox.backend=process")


def exec_node(req: dict, nonce: str, ev_w: int) -> None:
    """In the child, in the work directory: write the files and become node."""
    files = {"solution.js": req.get("code") or "", "harness.cjs": harness(),
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
