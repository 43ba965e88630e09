"""`python -m finllm_edge.lab ...` is `finllm-edge ...`."""

import sys

from .cli import main

sys.exit(main())
