"""The sandbox runner: a warm Python process that runs one sample at a time.

It runs INSIDE the sandbox (a container: Python 3.11, Debian bookworm; or a bubblewrap
sandbox for backend=process, with the pipeline's own Python, 3.10 or later), standard
library only. The backends bind-mount this directory read-only at /opt/sandbox/runner and
start `python3 -I -B /opt/sandbox/runner/__main__.py --container` as pid 1 of the sandbox;
`__main__.py` makes the directory importable as the package `runner`. The host imports
the same modules as `pipeline.sandbox.runner.*`: the frame codec (`protocol`), the
definition of what counts as a test (`testcount`, used by the reply checks too) and
`limits.STARVATION_CAP`; so none of them may import anything outside this directory.

Modules, one concept each:

- `protocol`: length-prefixed JSON frames, the request and result fields, the statuses;
- `evidence`: the verdict, decided from the evidence a sample's child leaves;
- `testcount`: what counts as a test, shared with the host's checks;
- `python_exec`: a Python sample's tests, under pytest or statement by statement;
- `javascript_exec` and `harness.cjs`: a JavaScript sample, run by node;
- `limits`: the child's rlimits and the clocks and counters the deadline reads;
- `child`: what the forked child does before it runs the sample;
- `scratch`: killing every other process and wiping /tmp after a sample;
- `serve`: the runner's loop: read a request, fork, wait, decide, answer.

Per sample the runner forks a child (a clean copy of this warm process, pytest and common
modules already imported), which sets its own rlimits, runs the code and the tests, and
finally writes the verdict evidence (counts plus a per-run random nonce) to a pipe that
only the runner reads. The verdict comes from that evidence, never from the exit code or
stdout: code that exits early, closes stdout or prints "passed" leaves no evidence and is
`failed`. (Code that walks the interpreter's memory to find the nonce could forge it; the
gate is for generated code, not for a determined attacker, whom the sandbox still
confines.)

Timeouts: the child is killed when `timeout_s` has passed in which it was running or
blocked by itself, i.e. wall time minus the time it waited for a CPU (the run-queue delay
in /proc/<pid>/schedstat). A passing sample therefore still passes when other work keeps
the CPUs busy; `limits.STARVATION_CAP` x timeout_s bounds the wall time whatever the load.
After each sample every process but the runner is killed and /tmp and /dev/shm are wiped.
"""
