"""``python -m tunnel``: same as the ``tunnel`` console script."""

import sys

from tunnel.cli import main

sys.exit(main())
