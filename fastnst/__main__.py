"""``python -m fastnst COMMAND ...``: the ``fastnst`` command (:mod:`fastnst.commands`)."""

import sys

from fastnst.commands import main

if __name__ == "__main__":
    sys.exit(main())
