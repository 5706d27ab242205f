"""A long run keeps memory flat: the fastest stage classifies 150 photos in one process (bench/memory_soak.py,
in a subprocess of its own so that pytest's memory does not count) and its resident memory may not grow by
more than GROWTH_BOUND_MB between image 20 and image 150. A stage that kept one 112x112x64 float32
activation (3.2 MB) per image would grow by some 400 MB over the run, one that kept its smallest activation
(7x7x2048, 401 KB) by 50 MB; a decoder that kept a 12-megapixel photo's pixels (reduced: 2.25 MB), by some
300 MB. The photos: pics/, and pics/ scaled up to 12 megapixels. (`python -m bench.memory_soak --images 300`
runs longer.)
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.album import make_album
from bench.memory_soak import WARM
from common.image import images_in
from common.paths import PICS_DIR, REPO
from common.stages import FASTEST

IMAGES = 150
GROWTH_BOUND_MB = 5.0
TIMEOUT_S = 1800


@pytest.fixture(params=["pics", "large"])
def photos(request, tmp_path) -> Path:
    """pics/ as it is, or scaled up to 12 megapixels: JPEGs decoded reduced, one per core at a time."""
    if request.param == "pics":
        return PICS_DIR
    make_album(tmp_path, len(images_in(PICS_DIR)))
    return tmp_path


@pytest.mark.slow
def test_memory_stays_flat(photos, record_property):
    result = subprocess.run([sys.executable, "-m", "bench.memory_soak", "--stage", FASTEST, "--images", str(IMAGES),
                             "--folder", photos, "--json"], cwd=REPO, capture_output=True, text=True,
                            timeout=TIMEOUT_S)
    assert result.returncode == 0, result.stderr
    soak = json.loads(result.stdout)
    assert soak["stage"] == FASTEST and soak["images"] == IMAGES and soak["warm"] == WARM
    record_property("rss_after_warm_mb", soak["rss_after_warm_mb"])
    record_property("rss_after_all_mb", soak["rss_after_all_mb"])
    print(f"\n{FASTEST}, {photos}: resident memory {soak['rss_after_warm_mb']} MB after {WARM} images, "
          f"{soak['rss_after_all_mb']} MB after {IMAGES}")
    assert soak["growth_mb"] <= GROWTH_BOUND_MB
