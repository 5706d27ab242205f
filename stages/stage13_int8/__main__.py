import sys

from common.cli import main
from stages.stage13_int8.model import Model

sys.exit(main("stage13_int8", Model))
