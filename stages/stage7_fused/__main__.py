import sys

from common.cli import main
from stages.stage7_fused.model import Model

sys.exit(main("stage7_fused", Model))
