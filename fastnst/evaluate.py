"""``python -m fastnst.evaluate``: the command line of :mod:`fastnst.tools.evaluate`."""

import sys

from fastnst.tools.evaluate import main

if __name__ == "__main__":
    sys.exit(main())
