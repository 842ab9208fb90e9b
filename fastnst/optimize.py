"""``python -m fastnst.optimize``: the command line of :mod:`fastnst.tools.optimize`."""

import sys

from fastnst.tools.optimize import main

if __name__ == "__main__":
    sys.exit(main())
