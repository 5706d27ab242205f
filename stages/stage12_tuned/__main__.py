import sys

from common.cli import main
from stages.stage12_tuned.model import Model

sys.exit(main("stage12_tuned", Model))
