"""Stage 4, prealloc: every activation buffer is allocated once, when the model is built.

Stage 3 allocated a fresh output array in every op, 174 of them per forward pass, and let Python
look up each weight by name. Here the model owns a small fixed set of buffers, reused layer after layer
like the C++ original's ping-pong buffers: four of the largest activation's size, and one each for the
input image, the pooled features and the logits. Every op writes into an `out` it is given (batch norm,
ReLU and the residual add work in place), and the whole forward pass is planned when the model is built:
a list of (kernel, arguments) steps with every weight and buffer already bound, so the forward pass does
no allocation and no name lookup.

The kernels' loops and the weight pool are stage 3's (the pool's loading is common.weights.load_tensors from
here on).
"""

import math
import time
from typing import NamedTuple

import numpy as np
from numba import njit

from common.architecture import Bottleneck, Conv, ResNet50, resnet50
from common.paths import WEIGHTS_DIR
from common.weights import load_manifest, load_tensors

NUM_BUFFERS = 4  # a bottleneck needs its input, two intermediates and its output (or shortcut) at once


@njit(fastmath=True)
def conv2d(x, weight, stride, padding, out):
    """x: HWC, weight: OHWI, out: HWC. Loop order: output channel, output row, output column,
    kernel row, kernel column, input channel: the innermost loop reads both x and weight contiguously."""
    height, width, in_channels = x.shape
    out_height, out_width, out_channels = out.shape
    kernel = weight.shape[1]
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


@njit(fastmath=True)
def batch_norm(x, gamma, beta, mean, var, eps, out):
    """Inference batch norm on HWC: y = gamma * (x - mean) / sqrt(var + eps) + beta, per channel."""
    height, width, channels = x.shape
    for h in range(height):
        for w in range(width):
            for c in range(channels):
                out[h, w, c] = gamma[c] * (x[h, w, c] - mean[c]) / math.sqrt(var[c] + eps) + beta[c]


@njit(fastmath=True)
def relu(x, out):
    height, width, channels = x.shape
    for h in range(height):
        for w in range(width):
            for c in range(channels):
                out[h, w, c] = max(x[h, w, c], np.float32(0.0))


@njit(fastmath=True)
def max_pool(x, kernel, stride, padding, out):
    """Max over kernel x kernel windows of HWC. Padding acts as minus infinity: it never wins.
    Channels innermost, so each window step compares 16 channels at once."""
    height, width, channels = x.shape
    out_height, out_width, _ = out.shape
    out[:] = -np.inf
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


@njit(fastmath=True)
def global_avg_pool(x, out):
    """HWC -> C: the mean of each channel over all positions."""
    height, width, channels = x.shape
    out[:] = 0.0
    for h in range(height):
        for w in range(width):
            for c in range(channels):
                out[c] += x[h, w, c]
    for c in range(channels):
        out[c] /= height * width


@njit(fastmath=True)
def fully_connected(x, weight, bias, out):
    """x: (in,), weight: (out, in), bias: (out,), out: (out,)"""
    out_features, in_features = weight.shape
    for o in range(out_features):
        acc = np.float32(0.0)
        for i in range(in_features):
            acc += weight[o, i] * x[i]
        out[o] = acc + bias[o]


@njit(fastmath=True)
def add(a, b, out):
    height, width, channels = a.shape
    for h in range(height):
        for w in range(width):
            for c in range(channels):
                out[h, w, c] = a[h, w, c] + b[h, w, c]


class Planned(NamedTuple):
    """The forward pass, planned: the steps and the arrays they write."""

    steps: list  # (kernel, arguments), run in order by forward()
    buffers: list  # the NUM_BUFFERS flat buffers the activations take turns in
    image: np.ndarray  # HWC: where forward() writes the photo
    logits: np.ndarray


def plan(arch: ResNet50, pool: dict, eps: float) -> Planned:
    """Every buffer allocated and every step bound to its weights and buffers, in forward order."""
    largest = max(c.out_size**2 * c.out_channels for c in arch.convs)
    buffers = [np.empty(largest, np.float32) for _ in range(NUM_BUFFERS)]  # flat, viewed as HWC
    image = np.empty((arch.stem.in_size, arch.stem.in_size, arch.stem.in_channels), np.float32)  # HWC
    features = np.empty(arch.fc.in_features, np.float32)
    logits = np.empty(arch.fc.out_features, np.float32)
    steps = []

    def view(buffer, size, channels):
        """An HWC view of the start of a flat buffer."""
        return buffer[: size * size * channels].reshape(size, size, channels)

    def conv_bn(x, conv: Conv, out_buffer, with_relu: bool):
        out = view(out_buffer, conv.out_size, conv.out_channels)
        steps.append((conv2d, (x, pool[f"{conv.name}.weight"], conv.stride, conv.padding, out)))
        steps.append((batch_norm, (out, pool[f"{conv.bn}.weight"], pool[f"{conv.bn}.bias"],
                                   pool[f"{conv.bn}.running_mean"], pool[f"{conv.bn}.running_var"], eps, out)))
        if with_relu:
            steps.append((relu, (out, out)))
        return out

    def bottleneck(x, block: Bottleneck, free):
        """Plan one block reading x; `free` are the three buffers x is not in. Returns the output view."""
        b1, b2, b3 = free
        out = conv_bn(x, block.conv1, b1, with_relu=True)
        out = conv_bn(out, block.conv2, b2, with_relu=True)
        out = conv_bn(out, block.conv3, b3, with_relu=False)
        shortcut = conv_bn(x, block.downsample, b1, with_relu=False) if block.downsample else x
        steps.append((add, (out, shortcut, out)))
        steps.append((relu, (out, out)))
        return out

    x = conv_bn(image, arch.stem, buffers[0], with_relu=True)
    pooled = view(buffers[1], arch.pool.out_size, arch.pool.channels)
    steps.append((max_pool, (x, arch.pool.kernel, arch.pool.stride, arch.pool.padding, pooled)))
    x, current = pooled, 1
    for block in arch.blocks:
        others = [i for i in range(NUM_BUFFERS) if i != current]
        x = bottleneck(x, block, [buffers[i] for i in others])
        current = others[2]  # the block's output is in the third free buffer
    steps.append((global_avg_pool, (x, features)))
    steps.append((fully_connected, (features, pool["fc.weight"], pool["fc.bias"], logits)))
    return Planned(steps, buffers, image, logits)


class Model:
    """ResNet-50 built from common.architecture; weights pooled when it is built, and the forward pass planned."""

    def __init__(self, weights_dir=WEIGHTS_DIR):
        self.manifest = load_manifest(weights_dir)
        self.arch = resnet50(self.manifest["variant"])
        start = time.perf_counter()
        pool = load_tensors(self.manifest, weights_dir)
        self.timings = {"load weights": time.perf_counter() - start}  # set-up costs in seconds
        self.plan = plan(self.arch, pool, np.float32(self.manifest["bn_eps"]))

    def forward(self, image):
        """image: HWC float32 (224, 224, 3) -> logits (1000,). The returned array is the model's own
        logits buffer: the next forward() overwrites it."""
        self.plan.image[...] = image
        for kernel, args in self.plan.steps:
            kernel(*args)
        return self.plan.logits
