"""The reference: torchvision's ResNet-50 running the exported weights, in the manifest's variant.

Tests and benchmarks use it to check and to compare every stage; inference never does.
torchvision builds ResNet v1.5 (stride on the 3x3 conv); for v1 weights the stride of each
downsampling block is moved to its first 1x1 conv.
"""

from pathlib import Path

import numpy as np

from common.paths import WEIGHTS_DIR
from common.weights import load_manifest, load_tensor


def torch_resnet50(manifest: dict, weights_dir: Path = WEIGHTS_DIR):
    import torch
    import torchvision

    model = torchvision.models.resnet50(weights=None)
    if manifest["variant"] == "v1":
        for layer in (model.layer2, model.layer3, model.layer4):
            block = layer[0]
            block.conv1.stride, block.conv2.stride = block.conv2.stride, block.conv1.stride
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.eps = manifest["bn_eps"]
    state = {name: torch.from_numpy(load_tensor(name, manifest, weights_dir)) for name in manifest["tensors"]}
    for name, value in model.state_dict().items():
        if name.endswith("num_batches_tracked"):
            state[name] = value
    model.load_state_dict(state, strict=True)
    return model.eval()


class Reference:
    """Reference logits for HWC float32 images prepared by common.image."""

    def __init__(self, weights_dir: Path = WEIGHTS_DIR, threads: int | None = None):
        import torch

        if threads:
            torch.set_num_threads(threads)
        self.manifest = load_manifest(weights_dir)
        self.model = torch_resnet50(self.manifest, weights_dir)

    def forward(self, image_hwc: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(image_hwc.transpose(2, 0, 1)))[None]  # NCHW
            return self.model(x)[0].numpy()
