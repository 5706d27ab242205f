"""The network, in torch: two 3x3 convolutions with ReLU and 2x2 max pooling, then a dense layer of 128 and
the 10 digit scores (the original tutorial's Keras MNIST model, in miniature for 8x8 inputs).

    input (1, S, S) -> conv 3x3, 16 -> relu -> max pool 2 -> conv 3x3, 32 -> relu -> max pool 2
                    -> flatten (32 * S/4 * S/4) -> dense 128 -> relu -> dense 10 (logits)

Training: Adam on the cross-entropy, mini-batches in a seeded random order, so that a run is repeatable.
"""

import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from basics.digits.data import Dataset

CLASSES = 10
CONV1_CHANNELS, CONV2_CHANNELS, HIDDEN = 16, 32, 128
KERNEL, PADDING = 3, 1  # "same" convolutions: the size changes only at the pools
POOL = 2
POOLS = 2  # the image side shrinks by POOL**POOLS before the dense layers
BATCH_SIZE = 32
LEARNING_RATE = 1e-3
# The layers are so small that splitting them across threads costs more than it saves: on the 2-core machine
# under load, an epoch of the 8x8 digits took 0.1 s with one thread and over 10 s with two.
TRAINING_THREADS = 1


class DigitNet(nn.Module):
    def __init__(self, image_size: int):
        super().__init__()
        self.conv1 = nn.Conv2d(1, CONV1_CHANNELS, KERNEL, padding=PADDING)
        self.conv2 = nn.Conv2d(CONV1_CHANNELS, CONV2_CHANNELS, KERNEL, padding=PADDING)
        self.feature_side = image_size // POOL**POOLS  # height == width of conv2's pooled output
        self.fc1 = nn.Linear(CONV2_CHANNELS * self.feature_side**2, HIDDEN)
        self.fc2 = nn.Linear(HIDDEN, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: NCHW (N, 1, S, S) -> logits (N, 10)"""
        x = nn.functional.max_pool2d(torch.relu(self.conv1(x)), POOL)
        x = nn.functional.max_pool2d(torch.relu(self.conv2(x)), POOL)
        x = torch.flatten(x, 1)  # NCHW -> (N, C*H*W): channel-major, which by_hand has to respect
        return self.fc2(torch.relu(self.fc1(x)))


@dataclass(frozen=True)
class Epoch:
    number: int
    loss: float  # mean training cross-entropy over the epoch
    seconds: float


def train(data: Dataset, epochs: int, seed: int, report=None) -> DigitNet:
    """A freshly initialized DigitNet trained for `epochs` passes over data's training set, on
    TRAINING_THREADS threads (torch's setting is restored afterwards). report(Epoch) is called after each epoch."""
    threads = torch.get_num_threads()
    torch.set_num_threads(TRAINING_THREADS)
    try:
        return _train(data, epochs, seed, report)
    finally:
        torch.set_num_threads(threads)


def _train(data: Dataset, epochs: int, seed: int, report) -> DigitNet:
    torch.manual_seed(seed)
    net = DigitNet(data.image_size)
    optimizer = torch.optim.Adam(net.parameters(), lr=LEARNING_RATE)
    images, labels = torch.from_numpy(data.train_images), torch.from_numpy(data.train_labels)
    order = torch.Generator().manual_seed(seed)
    for number in range(1, epochs + 1):
        start = time.perf_counter()
        net.train()
        total = 0.0
        for batch in torch.randperm(len(images), generator=order).split(BATCH_SIZE):
            optimizer.zero_grad()
            loss = nn.functional.cross_entropy(net(images[batch]), labels[batch])
            loss.backward()
            optimizer.step()
            total += loss.item() * len(batch)
        if report:
            report(Epoch(number, total / len(images), time.perf_counter() - start))
    return net.eval()


def logits(net: DigitNet, images: np.ndarray) -> np.ndarray:
    """NCHW float32 images -> (N, 10) float32 logits."""
    with torch.inference_mode():
        return net(torch.from_numpy(images)).numpy()
