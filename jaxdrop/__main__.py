"""``python -m jaxdrop demo|bench|info``: the command line, in ``jaxdrop.cli``."""

import sys

from jaxdrop.cli import main

if __name__ == "__main__":
    sys.exit(main(prog="python -m jaxdrop"))
