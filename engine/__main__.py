"""`python -m engine` is the `hsbulk` command."""

import sys

from engine.cli import main

sys.exit(main())
