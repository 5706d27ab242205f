import sys

from common.cli import main
from stages.stage7_blocked.model import Model

sys.exit(main("stage7_blocked", Model, threads=True))
