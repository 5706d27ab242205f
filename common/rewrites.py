"""Stage 16's graph rewrite, for the stages after it: stages/stage16_strides/model.py writes it out and explains it.
Each downsampling block's stride moves up into the block before it (exact for ResNet v1; v1.5 is left as it is).
"""

from dataclasses import replace

from common.architecture import ResNet50, out_size, resnet50


def strides_moved(variant: str) -> ResNet50:
    """ResNet-50 (common/architecture.py) with the stride of every downsampling block whose input is read only by
    1x1 convs of that stride (conv1 and the projection shortcut: v1's) moved into the block before it: its conv2
    takes the stride, its conv3 runs on conv2's smaller output, and the downsampling block's conv1 and shortcut
    read that smaller output with stride 1. The blocks before ResNet-50's downsampling blocks have no projection of
    their own, which would have to take the stride too: such a block is left as it is."""
    arch = resnet50(variant)
    blocks = list(arch.blocks)
    for i in range(1, len(blocks)):
        block, before = blocks[i], blocks[i - 1]
        stride = block.conv1.stride
        readers = (block.conv1, block.downsample)
        if stride == 1 or before.downsample or not all(c and c.kernel == 1 and c.stride == stride for c in readers):
            continue
        c2 = before.conv2
        conv2 = replace(c2, stride=stride, out_size=out_size(c2.in_size, c2.kernel, stride, c2.padding))
        conv3 = replace(before.conv3, in_size=conv2.out_size, out_size=conv2.out_size)
        blocks[i - 1] = replace(before, conv2=conv2, conv3=conv3)
        blocks[i] = replace(block, conv1=replace(block.conv1, stride=1, in_size=conv3.out_size),
                            downsample=replace(block.downsample, stride=1, in_size=conv3.out_size))
    return replace(arch, blocks=tuple(blocks))
