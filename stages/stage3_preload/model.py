"""Stage 3, preload: every weight is read from disk once, when the model is built, into a pool.

Stages 1 and 2 opened, read and checked 267 files (about 100 MB) inside every forward pass, and stage 2
transposed each conv weight to OHWI there too. Here the pool, a dict from tensor name to array, is
filled before the first inference, already in the layout the kernels want; the forward pass opens no
file.

The kernels are stage 2's: vectorized loops over HWC activations; every op still allocates its output.
"""

import math
import time

import numpy as np
from numba import njit

from common.architecture import Bottleneck, Conv, resnet50
from common.paths import WEIGHTS_DIR
from common.weights import load_manifest, load_tensor


@njit(fastmath=True)
def conv2d(x, weight, stride, padding):
    """x: HWC, weight: OHWI -> HWC. Loop order: output channel, output row, output column,
    kernel row, kernel column, input channel: the innermost loop reads both x and weight contiguously."""
    height, width, in_channels = x.shape
    out_channels, kernel, _, _ = weight.shape
    out_height = (height + 2 * padding - kernel) // stride + 1
    out_width = (width + 2 * padding - kernel) // stride + 1
    out = np.empty((out_height, out_width, out_channels), dtype=np.float32)  # HWC
    for co in range(out_channels):
        for ho in range(out_height):
            for wo in range(out_width):
                acc = np.float32(0.0)
                for kh in range(kernel):
                    hi = ho * stride - padding + kh
                    if hi < 0 or hi >= height:
                        continue
                    for kw in range(kernel):
                        wi = wo * stride - padding + kw
                        if wi < 0 or wi >= width:
                            continue
                        for ci in range(in_channels):
                            acc += x[hi, wi, ci] * weight[co, kh, kw, ci]
                out[ho, wo, co] = acc
    return out


@njit(fastmath=True)
def batch_norm(x, gamma, beta, mean, var, eps):
    """Inference batch norm on HWC: y = gamma * (x - mean) / sqrt(var + eps) + beta, per channel."""
    height, width, channels = x.shape
    out = np.empty_like(x)
    for h in range(height):
        for w in range(width):
            for c in range(channels):
                out[h, w, c] = gamma[c] * (x[h, w, c] - mean[c]) / math.sqrt(var[c] + eps) + beta[c]
    return out


@njit(fastmath=True)
def relu(x):
    height, width, channels = x.shape
    out = np.empty_like(x)
    for h in range(height):
        for w in range(width):
            for c in range(channels):
                out[h, w, c] = max(x[h, w, c], np.float32(0.0))
    return out


@njit(fastmath=True)
def max_pool(x, kernel, stride, padding):
    """Max over kernel x kernel windows of HWC. Padding acts as minus infinity: it never wins.
    Channels innermost, so each window step compares 16 channels at once."""
    height, width, channels = x.shape
    out_height = (height + 2 * padding - kernel) // stride + 1
    out_width = (width + 2 * padding - kernel) // stride + 1
    out = np.full((out_height, out_width, channels), -np.inf, dtype=np.float32)  # HWC
    for ho in range(out_height):
        for wo in range(out_width):
            for kh in range(kernel):
                hi = ho * stride - padding + kh
                if hi < 0 or hi >= height:
                    continue
                for kw in range(kernel):
                    wi = wo * stride - padding + kw
                    if wi < 0 or wi >= width:
                        continue
                    for c in range(channels):
                        out[ho, wo, c] = max(out[ho, wo, c], x[hi, wi, c])
    return out


@njit(fastmath=True)
def global_avg_pool(x):
    """HWC -> C: the mean of each channel over all positions."""
    height, width, channels = x.shape
    out = np.zeros(channels, dtype=np.float32)
    for h in range(height):
        for w in range(width):
            for c in range(channels):
                out[c] += x[h, w, c]
    for c in range(channels):
        out[c] /= height * width
    return out


@njit(fastmath=True)
def fully_connected(x, weight, bias):
    """x: (in,), weight: (out, in), bias: (out,) -> (out,)"""
    out_features, in_features = weight.shape
    out = np.empty(out_features, dtype=np.float32)
    for o in range(out_features):
        acc = np.float32(0.0)
        for i in range(in_features):
            acc += weight[o, i] * x[i]
        out[o] = acc + bias[o]
    return out


@njit(fastmath=True)
def add(a, b):
    height, width, channels = a.shape
    out = np.empty_like(a)
    for h in range(height):
        for w in range(width):
            for c in range(channels):
                out[h, w, c] = a[h, w, c] + b[h, w, c]
    return out


def load_tensors(manifest, weights_dir):
    """Every tensor by name, in the layout the kernels want: conv weights OHWI, the rest as exported."""
    pool = {}
    for name in manifest["tensors"]:
        tensor = load_tensor(name, manifest, weights_dir)
        if tensor.ndim == 4:
            tensor = np.ascontiguousarray(tensor.transpose(0, 2, 3, 1))  # OIHW -> OHWI
        pool[name] = tensor
    return pool


class Model:
    """ResNet-50 built from common.architecture; all weights are loaded into a pool when it is built."""

    def __init__(self, weights_dir=WEIGHTS_DIR):
        self.manifest = load_manifest(weights_dir)
        self.arch = resnet50(self.manifest["variant"])
        self.eps = np.float32(self.manifest["bn_eps"])
        start = time.perf_counter()
        self.pool = load_tensors(self.manifest, weights_dir)
        self.timings = {"load weights": time.perf_counter() - start}  # set-up costs in seconds

    def conv_bn(self, x, conv: Conv, with_relu: bool):
        pool = self.pool
        y = conv2d(x, pool[f"{conv.name}.weight"], conv.stride, conv.padding)
        y = batch_norm(y, pool[f"{conv.bn}.weight"], pool[f"{conv.bn}.bias"],
                       pool[f"{conv.bn}.running_mean"], pool[f"{conv.bn}.running_var"], self.eps)
        return relu(y) if with_relu else y

    def bottleneck(self, x, block: Bottleneck):
        out = self.conv_bn(x, block.conv1, with_relu=True)
        out = self.conv_bn(out, block.conv2, with_relu=True)
        out = self.conv_bn(out, block.conv3, with_relu=False)
        shortcut = self.conv_bn(x, block.downsample, with_relu=False) if block.downsample else x
        return relu(add(out, shortcut))

    def forward(self, image):
        """image: HWC float32 (224, 224, 3) -> logits (1000,)"""
        arch = self.arch
        x = self.conv_bn(image, arch.stem, with_relu=True)
        x = max_pool(x, arch.pool.kernel, arch.pool.stride, arch.pool.padding)
        for block in arch.blocks:
            x = self.bottleneck(x, block)
        features = global_avg_pool(x)
        return fully_connected(features, self.pool["fc.weight"], self.pool["fc.bias"])
