"""Stage 2, simd: the same loops, written so that the compiler turns them into vector instructions.

Two changes against stage 1:
- fastmath=True lets LLVM reorder float additions, so a sum over a loop can be split across the 16
  lanes of an AVX-512 register (and multiply + add fused into one FMA instruction);
- every innermost loop runs over contiguous memory: conv weights are transposed from OIHW to OHWI when
  loaded, so weight[co, kh, kw, :] lines up with the HWC input x[hi, wi, :]; max pool loops over
  channels innermost.

The rest is stage 1's: HWC float32 activations; each layer loads its weights from weights/ when it runs,
inside the timed forward pass, and every op allocates its output.
"""

import math

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


class Model:
    """ResNet-50 built from common.architecture; weights are read from disk as each layer runs."""

    def __init__(self, weights_dir=WEIGHTS_DIR):
        self.weights_dir = weights_dir
        self.manifest = load_manifest(weights_dir)
        self.arch = resnet50(self.manifest["variant"])
        self.eps = np.float32(self.manifest["bn_eps"])
        self.timings = {}  # set-up costs in seconds: none, everything happens in forward()

    def load(self, name):
        return load_tensor(name, self.manifest, self.weights_dir)

    def conv_bn(self, x, conv: Conv, with_relu: bool):
        weight = np.ascontiguousarray(self.load(f"{conv.name}.weight").transpose(0, 2, 3, 1))  # OIHW -> OHWI
        y = conv2d(x, weight, conv.stride, conv.padding)
        y = batch_norm(y, self.load(f"{conv.bn}.weight"), self.load(f"{conv.bn}.bias"),
                       self.load(f"{conv.bn}.running_mean"), self.load(f"{conv.bn}.running_var"), self.eps)
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
        return fully_connected(features, self.load("fc.weight"), self.load("fc.bias"))
