"""``python -m fusedmlp``: the command line (see fusedmlp.cli)."""

import sys

from .cli import main

sys.exit(main())
