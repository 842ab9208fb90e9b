"""``python -m fastnst.web``: see :mod:`fastnst.web.cli`."""

import sys

from fastnst.web.cli import main

sys.exit(main())
