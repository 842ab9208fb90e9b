"""Train a style network: ``python train.py data.root=PHOTOS style.image=PAINTING [key=value ...]``.

The same as ``fastnst train ...``: Hydra composes conf/train.yaml and the command-line overrides, and
:mod:`fastnst.training.entry` runs the training (``python train.py --help`` lists every setting).
"""

import sys

from fastnst.training.entry import main

if __name__ == "__main__":
    main(invocation=[sys.executable, sys.argv[0]])
