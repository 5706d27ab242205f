import sys

from common.cli import main
from stages.stage16_strides.model import Model

sys.exit(main("stage16_strides", Model))
