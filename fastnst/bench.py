"""``python -m fastnst.bench``: the command line of :mod:`fastnst.tools.bench`."""

import sys

from fastnst.tools.bench.cli import main

if __name__ == "__main__":
    sys.exit(main())
