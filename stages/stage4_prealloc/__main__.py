import sys

from common.cli import main
from stages.stage4_prealloc.model import Model

sys.exit(main("stage4_prealloc", Model))
