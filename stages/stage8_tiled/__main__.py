import sys

from common.cli import main
from stages.stage8_tiled.model import Model

sys.exit(main("stage8_tiled", Model))
