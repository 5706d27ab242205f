import sys

from common.cli import main
from stages.stage10_winograd.model import Model

sys.exit(main("stage10_winograd", Model))
