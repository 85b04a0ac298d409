"""`python -m ssjdn.core.cli` (and `torchrun -m ssjdn.core.cli`) runs the `ssjdn` command."""
import sys

from ssjdn.core.cli.main import main

sys.exit(main())
