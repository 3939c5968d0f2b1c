"""`python -m engine` is the `hsbulk` command.

The signal handlers go in before anything heavy is imported (polars takes a while), so
that SIGINT/SIGTERM during start-up end the run as interrupted, not with a traceback.
"""

import sys

from engine.interrupt import PENDING

PENDING.install()

from engine.cli import main  # noqa: E402  (after the handlers, on purpose)


def entry() -> None:
    """The `hsbulk` console script."""
    sys.exit(main())


if __name__ == "__main__":
    entry()
