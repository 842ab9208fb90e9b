"""``python -m fastnst.info``: the command line of :mod:`fastnst.tools.info`."""

import sys

from fastnst.tools.info import main

if __name__ == "__main__":
    sys.exit(main())
