"""``python -m probpath.cli`` (and ``torchrun ... -m probpath.cli train ...``)."""

import sys

from probpath.cli._main import main

sys.exit(main())
