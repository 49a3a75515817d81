"""`python -m sr3infer.cli ...` (as torchrun starts it) is the `sr3infer` command."""

import sys

from . import main

sys.exit(main())
