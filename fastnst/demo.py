"""``python -m fastnst.demo``: the command line of :mod:`fastnst.tools.demo`."""

import sys

from fastnst.tools.demo import main

if __name__ == "__main__":
    sys.exit(main())
