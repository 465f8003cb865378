"""``python -m survae_flowify.cli`` (what ``torchrun -m survae_flowify.cli`` starts in each process)."""

import sys

from survae_flowify.cli.dispatch import main

sys.exit(main())
