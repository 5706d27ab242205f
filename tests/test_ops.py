"""Every stage-1 op against the matching PyTorch op (torch.nn.functional) on random inputs.

The shapes are chosen to catch indexing mistakes that ResNet-50's own shapes would hide: odd and
non-square sizes, stride 2, padding other than kernel // 2, kernels 1, 3 and 7, and channel counts
that are not multiples of 8 or 16. Our activations are HWC and conv weights OIHW; torch wants NCHW,
so each comparison converts with `to_nchw` / `to_hwc`.

Ops that only pick or add values (ReLU, max pool, add) must match bit for bit. Ops that sum many
products (conv, fully connected, average pool, batch norm) may round differently from torch, which
sums in another order; they are compared with SUM_TOLERANCE, relative to the largest output.
"""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from stages.stage1_origin.model import (
    add,
    batch_norm,
    conv2d,
    fully_connected,
    global_avg_pool,
    max_pool,
    relu,
)

SEED = 20240501
# |ours - torch| allowed, as a fraction of the largest |torch output|. float32 has a relative precision
# of 6e-8; summing a few thousand products in another order loses a few hundred ulps at most.
SUM_TOLERANCE = 1e-5
# Max pool inputs lie in [MAX_POOL_LOW, MAX_POOL_HIGH], all negative: a padding of zeros would win every
# window that touches the border, so only padding that acts as minus infinity matches torch.
MAX_POOL_LOW, MAX_POOL_HIGH = -10.0, -1.0
# Batch norm variances as small as the epsilons tested, so that a wrong or ignored eps shows.
BN_VAR_HIGH = 1e-2


def to_nchw(x_hwc: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x_hwc.transpose(2, 0, 1)))[None]


def to_hwc(y_nchw: torch.Tensor) -> np.ndarray:
    return y_nchw[0].numpy().transpose(1, 2, 0)


def assert_sums_close(ours: np.ndarray, ref: np.ndarray) -> None:
    assert ours.shape == ref.shape and ours.dtype == np.float32
    worst = float(np.abs(ours - ref).max())
    allowed = SUM_TOLERANCE * float(np.abs(ref).max())
    assert worst <= allowed, f"largest difference {worst:.3g} > {allowed:.3g}"


def assert_exact(ours: np.ndarray, ref: np.ndarray) -> None:
    assert ours.shape == ref.shape and ours.dtype == np.float32
    np.testing.assert_array_equal(ours, ref)


def random(rng, shape, low=-1.0, high=1.0) -> np.ndarray:
    return rng.uniform(low, high, shape).astype(np.float32)


# (height, width, in channels, out channels, kernel, stride, padding)
CONV_CASES = [
    (15, 13, 3, 5, 7, 2, 3),  # the stem's shape, small: 7x7 stride 2 on 3 channels
    (9, 9, 13, 6, 3, 1, 1),
    (10, 9, 5, 7, 3, 2, 1),  # stride 2 on an even height and an odd width
    (8, 9, 10, 12, 3, 2, 2),  # padding larger than kernel // 2
    (7, 6, 19, 3, 3, 1, 0),  # no padding: the output shrinks
    (5, 6, 19, 3, 1, 1, 0),
    (7, 8, 3, 17, 1, 2, 0),  # 1x1 stride 2: a downsampling shortcut
    (6, 5, 33, 9, 7, 1, 3),
]


@pytest.mark.parametrize("height, width, cin, cout, kernel, stride, padding", CONV_CASES)
def test_conv2d(height, width, cin, cout, kernel, stride, padding):
    rng = np.random.default_rng(SEED)
    x = random(rng, (height, width, cin))  # HWC
    weight = random(rng, (cout, cin, kernel, kernel))  # OIHW
    ref = F.conv2d(to_nchw(x), torch.from_numpy(weight), stride=stride, padding=padding)
    assert_sums_close(conv2d(x, weight, stride, padding), to_hwc(ref))


@pytest.mark.parametrize("eps", [1e-5, 1e-3, 1e-1])
@pytest.mark.parametrize("height, width, channels", [(7, 9, 13), (1, 1, 3), (4, 3, 65)])
def test_batch_norm(height, width, channels, eps):
    rng = np.random.default_rng(SEED)
    x = random(rng, (height, width, channels))  # HWC
    gamma, beta, mean = (random(rng, channels) for _ in range(3))
    var = random(rng, channels, 0.0, BN_VAR_HIGH)
    ref = F.batch_norm(to_nchw(x), torch.from_numpy(mean), torch.from_numpy(var), torch.from_numpy(gamma),
                       torch.from_numpy(beta), training=False, eps=eps)
    assert_sums_close(batch_norm(x, gamma, beta, mean, var, np.float32(eps)), to_hwc(ref))


@pytest.mark.parametrize("height, width, channels", [(7, 9, 13), (1, 1, 3), (5, 4, 21)])
def test_relu(height, width, channels):
    rng = np.random.default_rng(SEED)
    x = random(rng, (height, width, channels))  # HWC, about half negative
    assert_exact(relu(x), to_hwc(F.relu(to_nchw(x))))


# (height, width, channels, kernel, stride, padding)
MAX_POOL_CASES = [
    (15, 13, 5, 3, 2, 1),  # ResNet-50's pool on odd sizes
    (8, 7, 13, 3, 2, 1),
    (9, 9, 3, 3, 1, 1),
    (8, 10, 7, 2, 2, 0),
    (11, 9, 6, 5, 2, 2),
    (10, 10, 3, 7, 3, 3),
    (1, 1, 3, 3, 2, 1),  # one pixel: every window but its centre is padding
]


@pytest.mark.parametrize("height, width, channels, kernel, stride, padding", MAX_POOL_CASES)
def test_max_pool(height, width, channels, kernel, stride, padding):
    rng = np.random.default_rng(SEED)
    x = random(rng, (height, width, channels), MAX_POOL_LOW, MAX_POOL_HIGH)  # HWC
    ref = F.max_pool2d(to_nchw(x), kernel, stride=stride, padding=padding)
    assert_exact(max_pool(x, kernel, stride, padding), to_hwc(ref))


@pytest.mark.parametrize("height, width, channels", [(7, 7, 2048), (7, 9, 13), (1, 1, 3), (5, 4, 21)])
def test_global_avg_pool(height, width, channels):
    rng = np.random.default_rng(SEED)
    x = random(rng, (height, width, channels))  # HWC
    ref = F.adaptive_avg_pool2d(to_nchw(x), 1)[0, :, 0, 0].numpy()  # (C,)
    assert_sums_close(global_avg_pool(x), ref)


@pytest.mark.parametrize("in_features, out_features", [(2048, 10), (37, 23), (1, 5), (130, 1)])
def test_fully_connected(in_features, out_features):
    rng = np.random.default_rng(SEED)
    x = random(rng, in_features)
    weight = random(rng, (out_features, in_features))  # (out, in), as torch.nn.Linear
    bias = random(rng, out_features)
    ref = F.linear(torch.from_numpy(x), torch.from_numpy(weight), torch.from_numpy(bias)).numpy()
    assert_sums_close(fully_connected(x, weight, bias), ref)


@pytest.mark.parametrize("height, width, channels", [(7, 9, 13), (1, 1, 3), (14, 14, 65)])
def test_add(height, width, channels):
    rng = np.random.default_rng(SEED)
    a, b = random(rng, (height, width, channels)), random(rng, (height, width, channels))  # HWC
    assert_exact(add(a, b), to_hwc(torch.add(to_nchw(a), to_nchw(b))))
