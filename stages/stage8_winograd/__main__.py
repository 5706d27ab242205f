import sys

from common.cli import main
from stages.stage8_winograd.model import Model

sys.exit(main("stage8_winograd", Model, threads=True))
