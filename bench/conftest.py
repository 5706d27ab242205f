"""Options and shared set-up of the latency benchmark (bench/test_latency.py); `python -m bench` passes them."""

import os
import platform
from importlib import metadata

import numpy as np
import pytest

from bench.album import DEFAULT_PHOTOS
from bench.paths import GIGA
from bench.peers import PEERS
from bench.rows import ALL, DEFAULT_IMAGE, select_peers, select_stages
from common.cli import non_negative_int, positive_int
from common.errors import UserError
from common.image import LOADERS, load_image
from common.paths import WEIGHTS_DIR
from common.stages import FASTEST
from common.weights import load_manifest

# Rounds per row: as many as fit into the time budget, within these bounds. The first stage takes
# seconds per image and gets the minimum; the fast ones get up to the maximum.
DEFAULT_SECONDS_PER_ROW = 10.0
DEFAULT_MIN_ROUNDS = 5
DEFAULT_MAX_ROUNDS = 200
FLOAT32_BITS = 32


def pytest_addoption(parser):
    group = parser.getgroup("resnet50 bench")
    group.addoption("--stages", default=ALL, help="stages to run: all, or numbers/names such as 3,4 (default: all)")
    group.addoption("--peers", default=ALL, help=f"peers to run: all, none, or a comma list of {','.join(PEERS)}")
    group.addoption("--threads", type=positive_int, default=os.cpu_count(),
                    help="threads for every row (default: all cores)")
    group.addoption("--image", default=str(DEFAULT_IMAGE), help="the photo every row classifies")
    group.addoption("--seconds", type=float, default=DEFAULT_SECONDS_PER_ROW,
                    help="timing budget per row in seconds, which sets its number of rounds")
    group.addoption("--min-rounds", type=positive_int, default=DEFAULT_MIN_ROUNDS, help="fewest timed rounds per row")
    group.addoption("--max-rounds", type=positive_int, default=DEFAULT_MAX_ROUNDS, help="most timed rounds per row")
    group.addoption("--no-first-answer", dest="first_answer", action="store_false",
                    help="skip the time to first answer (a fresh process per row, cold and warm: minutes in all)")
    group.addoption("--photos", type=non_negative_int, default=DEFAULT_PHOTOS,
                    help="photos of 12 megapixels the fastest stage classifies end to end, with each loader, when it "
                         "is among --stages (bench/test_end_to_end.py); 0: none")


def pytest_configure(config):
    """Checks the options before anything runs, so that a mistake costs one line, not a collection error."""
    import numba

    try:
        config.bench_rows = select_stages(config.getoption("stages")) + select_peers(config.getoption("peers"))
        config.bench_manifest = load_manifest(WEIGHTS_DIR)
        config.bench_image = load_image(config.getoption("image"), config.bench_manifest["preprocessing"])
    except UserError as e:
        raise pytest.UsageError(str(e)) from None
    count = config.getoption("threads")
    if count > numba.config.NUMBA_NUM_THREADS:
        raise pytest.UsageError(f"--threads {count}: at most {numba.config.NUMBA_NUM_THREADS} "
                                f"(numba's NUMBA_NUM_THREADS)")


def pytest_generate_tests(metafunc):
    if "row" in metafunc.fixturenames:
        metafunc.parametrize("row", metafunc.config.bench_rows)
    if "loader" in metafunc.fixturenames:
        # End to end only beside the fastest stage's forward-only row, whose rate it is compared with.
        wanted = FASTEST in metafunc.config.bench_rows and metafunc.config.getoption("photos")
        metafunc.parametrize("loader", LOADERS if wanted else [])


@pytest.fixture(scope="session")
def threads(pytestconfig) -> int:
    """Every row gets the same thread count: numba's parallel loops (stage 6 on) and torch are set here,
    the ONNX Runtime and OpenVINO peers take it when they are built."""
    import numba
    import torch

    count = pytestconfig.getoption("threads")
    numba.set_num_threads(count)
    torch.set_num_threads(count)
    return count


@pytest.fixture(scope="session")
def manifest(pytestconfig) -> dict:
    return pytestconfig.bench_manifest


@pytest.fixture(scope="session")
def image(pytestconfig) -> np.ndarray:
    """HWC float32 (224, 224, 3), as common.image prepares it for every stage."""
    return pytestconfig.bench_image


def pytest_benchmark_update_machine_info(config, machine_info):
    """What latest.json names next to the figures: the software versions, the threads every row used and the
    machine's measured FMA peak for them."""
    import numba
    import onnxruntime
    import openvino
    import torch

    from bench.peak import LANES, amx_peak_flops, bf16_peak_flops, int8_peak_ops, peak_flops

    machine_info["cores"] = os.cpu_count()
    machine_info["threads"] = config.getoption("threads")
    # The FMA peak of these threads, measured now, in the same run as the rows (bench/peak.py).
    machine_info["peak_gflops"] = peak_flops(config.getoption("threads")) / GIGA
    machine_info["vector_bits"] = LANES * FLOAT32_BITS
    int8_ops = int8_peak_ops(config.getoption("threads"))  # the int8 rows' peak: vpdpbusd's; None without VNNI
    machine_info["int8_peak_gops"] = int8_ops / GIGA if int8_ops else None
    bf16_flops = bf16_peak_flops(config.getoption("threads"))  # the bfloat16 rows': vdpbf16ps's; None without it
    machine_info["bf16_peak_gflops"] = bf16_flops / GIGA if bf16_flops else None
    amx_flops = amx_peak_flops(config.getoption("threads"))  # an AMX row's: tdpbf16ps's; None without AMX
    machine_info["amx_bf16_peak_gflops"] = amx_flops / GIGA if amx_flops else None
    machine_info["versions"] = {
        "python": platform.python_version(), "numpy": np.__version__, "numba": numba.__version__,
        "torch": torch.__version__, "onnxruntime": onnxruntime.__version__,
        "openvino": openvino.__version__.split("-")[0],  # without the build suffix
        "nncf": metadata.version("nncf"),  # quantizes the openvino-int8 peer
    }
