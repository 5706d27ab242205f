"""Threaded stages are correct for every thread count, including counts that do not divide the channel
counts (every ResNet-50 layer has an even number of channels, so 3 threads leave a remainder everywhere).
numba's thread pool is sized when numba starts, so each count runs in its own process."""

import json
import os
import subprocess
import sys

import pytest

from common.labels import softmax
from common.paths import REPO
from common.stages import STAGES, threaded
from tests.conftest import PICS
from tests.test_network import check_answer

THREADED = [s for s in STAGES if threaded(s)]
THREAD_COUNTS = (1, 2, 3)
PICTURE = PICS[0]


@pytest.mark.slow
@pytest.mark.parametrize("threads", THREAD_COUNTS)
@pytest.mark.parametrize("stage", THREADED)
def test_thread_count_gives_reference_answer(stage, threads, reference_logits):
    env = {**os.environ, "NUMBA_NUM_THREADS": str(max(THREAD_COUNTS))}
    result = subprocess.run([sys.executable, "-m", f"stages.{stage}", str(PICTURE), "--json", "--warmup", "0",
                             "--threads", str(threads)], cwd=REPO, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    top5 = json.loads(result.stdout.splitlines()[-1])["top5"]
    check_answer(stage, [t["class_id"] for t in top5], [t["prob"] for t in top5], softmax(reference_logits[PICTURE]),
                 f"{PICTURE.name}, {threads} threads")
