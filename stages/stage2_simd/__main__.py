import sys

from common.cli import main
from stages.stage2_simd.model import Model

sys.exit(main("stage2_simd", Model))
