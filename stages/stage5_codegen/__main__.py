import sys

from common.cli import main
from stages.stage5_codegen.model import Model

sys.exit(main("stage5_codegen", Model))
