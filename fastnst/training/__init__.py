"""Training: the data module (:mod:`.data`, prepared datasets in :mod:`.prepared`), the LightningModule
(:mod:`.module`), callbacks (:mod:`.callbacks`), fault handling (:mod:`.faults`), building a run from a plain
config (:mod:`.config`) and running it (:mod:`.run`). train.py is Hydra's entry into :func:`fit`."""

from fastnst.training.run import RunResult, fit

__all__ = ["RunResult", "fit"]
