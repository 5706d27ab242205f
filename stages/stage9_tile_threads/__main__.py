import sys

from common.cli import main
from stages.stage9_tile_threads.model import Model

sys.exit(main("stage9_tile_threads", Model))
