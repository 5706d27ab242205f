import sys

from common.cli import main
from stages.stage1_origin.model import Model

sys.exit(main("stage1_origin", Model))
