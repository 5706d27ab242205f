"""ResNet-50, described once.

Every stage builds its network from this description instead of retyping shapes: the 53
convolutions (channels, kernel, stride, padding, spatial sizes for a 224x224 input), how
they form bottleneck blocks, and where the variant puts the stride of a downsampling block:

- ``v1``   (the original paper, Keras): stride 2 on the block's first 1x1 conv (conv1);
- ``v1.5`` (torchvision):                stride 2 on the block's 3x3 conv (conv2).

Layer names are torchvision's state-dict prefixes, so ``spec.name + ".weight"`` names a tensor.
"""

from dataclasses import dataclass

IMAGE_SIZE = 224
NUM_CLASSES = 1000
VARIANTS = ("v1", "v1.5")

STEM_CHANNELS = 64
STEM_KERNEL, STEM_STRIDE, STEM_PADDING = 7, 2, 3
POOL_KERNEL, POOL_STRIDE, POOL_PADDING = 3, 2, 1
# (blocks, bottleneck width, stride of the first block) for layer1..layer4
STAGES = ((3, 64, 1), (4, 128, 2), (6, 256, 2), (3, 512, 2))
EXPANSION = 4  # a bottleneck's output has 4x its width in channels


def out_size(size: int, kernel: int, stride: int, padding: int) -> int:
    return (size + 2 * padding - kernel) // stride + 1


@dataclass(frozen=True)
class Conv:
    """A convolution and the batch norm that follows it (every conv in ResNet-50 has one)."""

    name: str  # e.g. "layer2.0.conv1": weight is name + ".weight", OIHW
    bn: str  # e.g. "layer2.0.bn1": running_mean, running_var, weight (gamma), bias (beta)
    in_channels: int
    out_channels: int
    kernel: int
    stride: int
    padding: int
    in_size: int  # input height == width
    out_size: int

    @property
    def macs(self) -> int:
        return self.out_size**2 * self.out_channels * self.in_channels * self.kernel**2


@dataclass(frozen=True)
class MaxPool:
    name: str
    channels: int
    kernel: int
    stride: int
    padding: int
    in_size: int
    out_size: int


@dataclass(frozen=True)
class Bottleneck:
    """out = relu(bn3(conv3(relu(bn2(conv2(relu(bn1(conv1(x))))))) + shortcut(x))"""

    name: str  # e.g. "layer2.0"
    conv1: Conv  # 1x1, reduces to the width
    conv2: Conv  # 3x3
    conv3: Conv  # 1x1, expands to 4x the width
    downsample: Conv | None  # 1x1 projection shortcut; None: the shortcut is x itself

    @property
    def convs(self) -> tuple[Conv, ...]:
        return (self.conv1, self.conv2, self.conv3) + ((self.downsample,) if self.downsample else ())


@dataclass(frozen=True)
class Linear:
    name: str  # "fc": weight (out, in), bias (out,)
    in_features: int
    out_features: int

    @property
    def macs(self) -> int:
        return self.in_features * self.out_features


@dataclass(frozen=True)
class ResNet50:
    variant: str
    stem: Conv
    pool: MaxPool
    blocks: tuple[Bottleneck, ...]
    fc: Linear

    @property
    def convs(self) -> tuple[Conv, ...]:
        return (self.stem,) + tuple(c for b in self.blocks for c in b.convs)

    @property
    def macs(self) -> int:
        """Multiply-adds of the convolutions and the fc layer (pooling, BN, adds are not counted)."""
        return sum(c.macs for c in self.convs) + self.fc.macs


def _conv(name, bn, cin, cout, kernel, stride, size) -> Conv:
    padding = kernel // 2
    return Conv(name, bn, cin, cout, kernel, stride, padding, size, out_size(size, kernel, stride, padding))


def resnet50(variant: str = "v1.5", image_size: int = IMAGE_SIZE) -> ResNet50:
    if variant not in VARIANTS:
        raise ValueError(f"unknown ResNet-50 variant {variant!r}; expected one of {VARIANTS}")
    stem = _conv("conv1", "bn1", 3, STEM_CHANNELS, STEM_KERNEL, STEM_STRIDE, image_size)
    pool = MaxPool(
        "maxpool", STEM_CHANNELS, POOL_KERNEL, POOL_STRIDE, POOL_PADDING,
        stem.out_size, out_size(stem.out_size, POOL_KERNEL, POOL_STRIDE, POOL_PADDING),
    )
    blocks = []
    channels, size = STEM_CHANNELS, pool.out_size
    for layer_index, (count, width, first_stride) in enumerate(STAGES, start=1):
        for i in range(count):
            name = f"layer{layer_index}.{i}"
            stride = first_stride if i == 0 else 1
            stride1, stride2 = (stride, 1) if variant == "v1" else (1, stride)
            out_channels = width * EXPANSION
            conv1 = _conv(f"{name}.conv1", f"{name}.bn1", channels, width, 1, stride1, size)
            conv2 = _conv(f"{name}.conv2", f"{name}.bn2", width, width, 3, stride2, conv1.out_size)
            conv3 = _conv(f"{name}.conv3", f"{name}.bn3", width, out_channels, 1, 1, conv2.out_size)
            downsample = None
            if stride != 1 or channels != out_channels:
                downsample = _conv(f"{name}.downsample.0", f"{name}.downsample.1",
                                   channels, out_channels, 1, stride, size)
            blocks.append(Bottleneck(name, conv1, conv2, conv3, downsample))
            channels, size = out_channels, conv3.out_size
    return ResNet50(variant, stem, pool, tuple(blocks), Linear("fc", channels, NUM_CLASSES))


def tensor_shapes(arch: ResNet50) -> dict[str, tuple[int, ...]]:
    """Every tensor of the network, by torchvision state-dict name, in torchvision layouts."""
    shapes = {}
    for c in arch.convs:
        shapes[f"{c.name}.weight"] = (c.out_channels, c.in_channels, c.kernel, c.kernel)  # OIHW
        for part in ("weight", "bias", "running_mean", "running_var"):
            shapes[f"{c.bn}.{part}"] = (c.out_channels,)
    shapes["fc.weight"] = (arch.fc.out_features, arch.fc.in_features)
    shapes["fc.bias"] = (arch.fc.out_features,)
    return shapes
