import sys

from common.cli import main
from stages.stage14_bf16.model import Model

sys.exit(main("stage14_bf16", Model))
