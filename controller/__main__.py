"""`python -m controller ...` is `wsctl ...`."""

import sys

from controller.app.cli import main

sys.exit(main())
