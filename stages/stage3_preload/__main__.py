import sys

from common.cli import main
from stages.stage3_preload.model import Model

sys.exit(main("stage3_preload", Model))
