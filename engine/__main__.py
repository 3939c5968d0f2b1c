"""`python -m engine` is the `hsbulk` command.

The signal handlers go in before anything heavy is imported (polars takes a while), so
that SIGINT/SIGTERM during start-up end the run as interrupted, not with a traceback.
"""

import signal
import sys

from engine.interrupt import PENDING

PENDING.install()

from engine.cli import main  # noqa: E402  (after the handlers, on purpose)


def entry() -> None:
    """The `hsbulk` console script."""
    code = main()
    # The run is over: a signal now changes nothing. Ignored, because Python puts the
    # default handlers back while it shuts down (polars' threads make that take a while),
    # and the default SIGTERM would end a finished run with -15 instead of its code.
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, signal.SIG_IGN)
    sys.exit(code)


if __name__ == "__main__":
    entry()
