"""``python -m phenossl``: the command line, also as torchrun starts it (``torchrun -m phenossl train ...``)."""

import sys

from phenossl.cli import main

if __name__ == "__main__":
    sys.exit(main())
