"""The trained DigitNet run with the project's own hand-written ops, the ones of stages/stage1_origin: a
convolution is conv2d on HWC activations with OIHW weights, then relu, max_pool, fully_connected.

Two things differ from torch's layout and are handled here, once, when the weights are taken over:
- stage 1's conv2d has no bias (ResNet's convolutions are followed by batch norm instead), so the bias
  is added to each output channel after it;
- torch flattens NCHW activations channel by channel (C, H, W), stage 1 keeps them HWC, so flattening
  gives the order (H, W, C): the columns of the first dense layer's weight are permuted to match.
"""

import numpy as np

from basics.digits.net import CONV2_CHANNELS, PADDING, POOL, DigitNet
from stages.stage1_origin.model import conv2d, fully_connected, max_pool, relu

STRIDE = 1
NO_PADDING = 0


def _numpy(tensor) -> np.ndarray:
    return np.ascontiguousarray(tensor.detach().numpy(), dtype=np.float32)


class HandWrittenDigitNet:
    def __init__(self, net: DigitNet):
        self.conv1_weight, self.conv1_bias = _numpy(net.conv1.weight), _numpy(net.conv1.bias)  # OIHW, (O,)
        self.conv2_weight, self.conv2_bias = _numpy(net.conv2.weight), _numpy(net.conv2.bias)
        fc1 = _numpy(net.fc1.weight)  # (128, C*H*W), columns in torch's channel-major order
        chw = fc1.reshape(fc1.shape[0], CONV2_CHANNELS, net.feature_side, net.feature_side)
        self.fc1_weight = np.ascontiguousarray(chw.transpose(0, 2, 3, 1).reshape(fc1.shape[0], -1))  # (128, H*W*C)
        self.fc1_bias = _numpy(net.fc1.bias)
        self.fc2_weight, self.fc2_bias = _numpy(net.fc2.weight), _numpy(net.fc2.bias)  # (10, 128), (10,)

    def conv_relu_pool(self, x: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
        y = conv2d(x, weight, STRIDE, PADDING) + bias  # HWC + (C,): the bias broadcasts over the channels
        return max_pool(relu(y), POOL, POOL, NO_PADDING)

    def forward(self, image_hwc: np.ndarray) -> np.ndarray:
        """One image, HWC float32 (S, S, 1) -> logits (10,) float32."""
        x = self.conv_relu_pool(image_hwc, self.conv1_weight, self.conv1_bias)
        x = self.conv_relu_pool(x, self.conv2_weight, self.conv2_bias)
        hidden = fully_connected(x.reshape(-1), self.fc1_weight, self.fc1_bias)  # flattened in HWC order
        hidden = relu(hidden.reshape(1, 1, -1)).reshape(-1)  # stage 1's relu takes HWC: a 1x1 image of 128
        return fully_connected(hidden, self.fc2_weight, self.fc2_bias)

    def logits(self, images_nchw: np.ndarray) -> np.ndarray:
        """(N, 1, S, S) float32 -> (N, 10) float32, one image at a time as stage 1 works."""
        return np.stack([self.forward(np.ascontiguousarray(image.transpose(1, 2, 0))) for image in images_nchw])
