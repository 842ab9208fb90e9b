"""``python -m fastnst.prepare``: the command line of :mod:`fastnst.tools.prepare`."""

import sys

from fastnst.tools.prepare import main

if __name__ == "__main__":
    sys.exit(main())
