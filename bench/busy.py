"""One core kept busy by another program, as on a learner's laptop where a browser or an editor is never idle.

`busy_core()` starts a child process that spins on the last core this process may run on (pinned there), and
stops it when the block ends, however it ends. The child also stops by itself once its parent is gone, so that
a bench killed from outside leaves no spinning process behind.
"""

import contextlib
import os
import subprocess
import sys

PARENT_CHECK_ITERATIONS = 1_000_000  # spins between checks that the parent still lives (a few ms)
SPIN = f"""
import os
parent = os.getppid()
while os.getppid() == parent:
    for _ in range({PARENT_CHECK_ITERATIONS}):
        pass
"""


@contextlib.contextmanager
def busy_core():
    """Yields the number of the core kept busy."""
    core = max(os.sched_getaffinity(0))
    child = subprocess.Popen([sys.executable, "-c", SPIN])
    try:
        os.sched_setaffinity(child.pid, {core})
        yield core
    finally:
        child.kill()
        child.wait()
