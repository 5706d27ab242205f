import sys

from common.cli import main
from stages.stage15_amx_bf16.model import Model

sys.exit(main("stage15_amx_bf16", Model))
