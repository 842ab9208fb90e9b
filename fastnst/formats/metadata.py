"""What a model file says about itself, typed: one :class:`ModelInfo` for every format.

It is written and read here only: a training checkpoint keeps ``ModelInfo.to_dict()`` under
``checkpoint["fastnst"]``, an ONNX model as JSON in its ``metadata_props["fastnst"]``, a ``.pt2`` archive as
its extra file ``fastnst.json``. :meth:`ModelInfo.from_dict` reads every version ever written (format 1:
fastnst 0.1 checkpoints and exports) and refuses what it cannot read with one sentence.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from fastnst.errors import UserError
from fastnst.models import create_model

FORMAT_VERSION = 2
META_KEY = "fastnst"  # checkpoint["fastnst"], metadata_props["fastnst"]; "fastnst.json" in .pt2 archives
SOURCE_FASTNST = "fastnst"
SOURCE_PYTORCH_EXAMPLES = "pytorch/examples fast_neural_style"


@dataclass(frozen=True)
class TrainingInfo:
    """How a fastnst network was trained (absent for foreign models)."""

    style_images: list[str] = field(default_factory=list)  # one path per style, as given at training time
    style_size: int | None = None  # longer side of the style images before their Gram targets were taken
    image_size: int | None = None  # training crop size (data.image_size)
    global_step: int = 0
    loss: dict[str, Any] = field(default_factory=dict)  # PerceptualLoss settings: layers, weights, VGG weights
    skipped_images: int = 0
    skipped_batches: int = 0
    init_from: str | None = None  # the checkpoint whose network this run started from (adding styles to it)
    trained_styles: list[str] | None = None  # the styles this run trained (None: all of them)
    # a network that takes any painting: where its paintings came from, how many trained it, the held-out ones
    paintings: dict[str, Any] | None = None

    @property
    def vgg_weights(self) -> str | None:
        value = self.loss.get("vgg_weights")
        return None if value is None else str(value)


def _training_info(data: dict[str, Any]) -> TrainingInfo:
    # Keys a later fastnst may add are ignored, so that its files still load here (all fields are optional).
    known = {f.name for f in dataclasses.fields(TrainingInfo)}
    return TrainingInfo(**{k: v for k, v in data.items() if k in known})


@dataclass(frozen=True)
class ModelInfo:
    """Which network a file holds and how it was made: enough to rebuild it with nothing else.

    ``architecture`` is a name of :mod:`fastnst.models`' registry and ``config`` its constructor
    arguments; ``styles`` names the styles in the order of the network's style weights.

    A network that takes any painting (``config["style_dim"]``) has no trained styles: its ``styles`` are the
    style vectors saved under a name (``style_vectors``, one [D] list per name; possibly none).
    """

    architecture: str
    config: dict[str, Any]
    styles: list[str]
    training: TrainingInfo | None = None
    source: str = SOURCE_FASTNST
    exported_from: str | None = None  # the checkpoint an exported file was made from
    format_version: int = FORMAT_VERSION
    style_vectors: list[list[float]] | None = None  # saved styles of a network that takes a painting

    @property
    def num_styles(self) -> int:
        return len(self.styles)

    @property
    def takes_painting(self) -> bool:
        """Whether the network maps any painting to its style (a style encoder and ``style_dim``)."""
        return self.config.get("style_dim") is not None

    @property
    def style_dim(self) -> int:
        """Length D of the style vector the network takes: ``style_dim``, or its number of trained styles."""
        return int(self.config["style_dim"]) if self.takes_painting else self.num_styles

    @property
    def painting_size(self) -> int | None:
        """Longer side, in px, of the painting its encoder expects (None: the network takes no painting)."""
        if not self.takes_painting:
            return None
        return int((self.config.get("encoder") or {}).get("painting_size", 256))

    def build(self) -> nn.Module:
        """A freshly initialised network of this architecture and config (load the weights into it)."""
        return create_model(self.architecture, **self.config)

    def replace(self, **changes: Any) -> ModelInfo:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Plain data (str, int, float, bool, None, lists, dicts): safe in a ``weights_only`` pickle and JSON.
        Always in the current layout: ``format_version`` says what was read, the dict is what is written."""
        data = json.loads(json.dumps(dataclasses.asdict(self), default=str))
        data["format_version"] = FORMAT_VERSION
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: Any, where: str = "the model") -> ModelInfo:
        """Read metadata of any format version; a :class:`UserError` naming ``where`` if it is not readable."""
        if not isinstance(data, dict):
            raise UserError(f"{where} has unreadable fastnst metadata (not a mapping)")
        version = data.get("format_version")
        if version is None and "network" in data:  # format 1 (fastnst 0.1): one TransformerNet, one style
            return cls._from_v1(data, where)
        if not isinstance(version, int) or version < 2:
            raise UserError(f"{where} has fastnst metadata of an unknown format ({version!r})")
        if version > FORMAT_VERSION:
            raise UserError(f"{where} was written by a newer fastnst (model format {version}, this one reads up to "
                            f"{FORMAT_VERSION}); upgrade fastnst")
        try:
            training = data.get("training")
            info = cls(architecture=str(data["architecture"]), config=dict(data["config"]),
                       styles=[str(s) for s in data["styles"]],
                       training=_training_info(training) if isinstance(training, dict) else None,
                       source=str(data.get("source", SOURCE_FASTNST)), exported_from=data.get("exported_from"),
                       format_version=version,
                       style_vectors=[[float(v) for v in row] for row in data["style_vectors"]]
                       if data.get("style_vectors") is not None else None)
        except (KeyError, TypeError, ValueError) as exc:
            raise UserError(f"{where} has incomplete fastnst metadata ({type(exc).__name__}: {exc})") from None
        if not info.styles and not info.takes_painting:
            raise UserError(f"{where} has fastnst metadata without style names")
        if info.takes_painting and len(info.style_vectors or []) != len(info.styles):
            raise UserError(f"{where} has {len(info.styles)} saved style name(s) but {len(info.style_vectors or [])} "
                            f"style vector(s)")
        return info

    @classmethod
    def from_json(cls, text: str, where: str = "the model") -> ModelInfo:
        try:
            data = json.loads(text)
        except json.JSONDecodeError:
            raise UserError(f"{where} has fastnst metadata that is not valid JSON") from None
        return cls.from_dict(data, where)

    @classmethod
    def _from_v1(cls, data: dict[str, Any], where: str) -> ModelInfo:
        network = data.get("network")
        if not isinstance(network, dict):
            raise UserError(f"{where} has incomplete fastnst metadata (no network settings)")
        name = str(data.get("style_name") or "style")
        style_image = data.get("style_image")
        training = TrainingInfo(
            style_images=[str(style_image)] if style_image else [], style_size=data.get("style_size"),
            image_size=data.get("image_size"), global_step=int(data.get("global_step", 0)),
            loss=dict(data.get("loss") or {}), skipped_images=int(data.get("skipped_images", 0)),
            skipped_batches=int(data.get("skipped_batches", 0)))
        return cls(architecture="johnson", config={**network, "num_styles": 1}, styles=[name], training=training,
                   exported_from=data.get("source_checkpoint"), format_version=1)
