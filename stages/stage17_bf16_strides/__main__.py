import sys

from common.cli import main
from stages.stage17_bf16_strides.model import Model

sys.exit(main("stage17_bf16_strides", Model))
