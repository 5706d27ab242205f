"""Where things live. One place, so that tests and stages agree."""

import os
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
WEIGHTS_DIR = Path(os.environ.get("RESNET_WEIGHTS_DIR", REPO / "weights" / "resnet50"))
PICS_DIR = REPO / "pics"
# Downloads and generated code are kept out of the repository (and out of version control).
CACHE_DIR = Path(os.environ.get("RESNET_CACHE_DIR", Path.home() / ".cache" / "resnet50-from-scratch"))
