import sys

from common.cli import main
from stages.stage6_threads.model import Model

sys.exit(main("stage6_threads", Model))
