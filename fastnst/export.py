"""``python -m fastnst.export``: the command line of :mod:`fastnst.tools.export`."""

import sys

from fastnst.tools.export import main

if __name__ == "__main__":
    sys.exit(main())
