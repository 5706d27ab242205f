import sys

from common.cli import main
from stages.stage11_winograd4.model import Model

sys.exit(main("stage11_winograd4", Model))
