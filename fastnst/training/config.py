"""From a plain config dict (what train.py composes with Hydra) to the objects of a run: the data module,
the LightningModule and the callbacks (the logger: :mod:`fastnst.training.loggers`). ``_target_`` nodes are built with
``hydra.utils.instantiate``; every argument is checked against the target's signature first, so a
misspelt key or a wrong type is one sentence naming it, not a traceback from deep inside a constructor.
"""

from __future__ import annotations

import inspect
import typing
from pathlib import Path
from typing import Any

import pydantic
import pytorch_lightning as pl
import torch

from fastnst.errors import UserError
from fastnst.inference import known_failures
from fastnst.losses import PerceptualLoss
from fastnst.losses.vgg import MIN_SIZE
from fastnst.media.image import find_images
from fastnst.models import create_model, model_class
from fastnst.models.encoder import DEFAULT_STYLE_DIM
from fastnst.training.module import StyleTransferModule, split_optim
from fastnst.training.paintings import PaintingSet, split_paintings


def locate(target: Any, where: str) -> Any:
    """The object a ``_target_`` names, or one sentence."""
    from hydra.utils import get_object

    if not isinstance(target, str) or not target:
        raise UserError(f"{where}._target_ must name a class or function, got {target!r}")
    try:
        return get_object(target)
    except Exception:  # ImportError, AttributeError, ValueError wrapped by Hydra
        raise UserError(f"cannot import {target!r} named by {where}._target_") from None


def literal_choices(hint: Any) -> list[Any] | None:
    """The allowed values of a ``Literal`` annotation (or a Union/Optional of Literals), else None."""
    if typing.get_origin(hint) is typing.Literal:
        return list(typing.get_args(hint))
    if typing.get_origin(hint) is typing.Union:
        values: list[Any] = []
        for arg in typing.get_args(hint):
            if arg is type(None):
                values.append(None)
                continue
            inner = literal_choices(arg)
            if inner is None:
                return None
            values += inner
        return values
    return None


def check_arguments(fn: Any, kwargs: dict[str, Any], where: str) -> None:
    """Every key is a parameter of ``fn`` and every value fits its annotation, else one sentence."""
    sig = inspect.signature(fn)
    params = sig.parameters
    takes_any = any(p.kind is p.VAR_KEYWORD for p in params.values())
    try:
        hints = typing.get_type_hints(fn.__init__ if inspect.isclass(fn) else fn)
    except Exception:  # unresolvable annotations in a third-party signature: check names only
        hints = {}
    for key, value in kwargs.items():
        if key.startswith("_") and key.endswith("_"):  # _target_, _partial_, _recursive_ ...
            continue
        if key not in params:
            if takes_any:
                continue
            valid = ", ".join(k for k in params if k not in ("self", "args", "kwargs", "params"))
            raise UserError(f"{where}.{key} is not a setting of {where} (valid: {valid})")
        hint = hints.get(key)
        if hint is None or hint is Any:
            continue
        choices = literal_choices(hint)
        if choices is not None:
            if value not in choices:
                shown = ", ".join(str(c) for c in dict.fromkeys(choices) if c is not None)
                raise UserError(f"{where}.{key}={value!r} is not valid; choose one of {shown}")
            continue
        try:
            pydantic.TypeAdapter(hint, config=pydantic.ConfigDict(arbitrary_types_allowed=True)).validate_python(value)
        except pydantic.ValidationError as exc:
            expected = getattr(hint, "__name__", None) or str(hint).replace("typing.", "")
            detail = exc.errors()[0].get("msg", "")
            raise UserError(f"{where}.{key}={value!r} has the wrong type: expected {expected} ({detail})") from None
        except (pydantic.PydanticSchemaGenerationError, TypeError):
            continue


def instantiate(node: dict[str, Any], where: str, **extra: Any) -> Any:
    """``hydra.utils.instantiate(node)`` after checking the target and its arguments (one-sentence errors)."""
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate as hydra_instantiate

    node = dict(node)
    check_arguments(locate(node.get("_target_"), where), node, where)
    try:
        return hydra_instantiate(node, **extra)
    except InstantiationException as exc:
        cause = exc.__cause__
        if isinstance(cause, UserError):
            raise cause from None
        raise UserError(f"{where} could not be built: {str(cause or exc).splitlines()[0][:200]}") from None


# --- styles --------------------------------------------------------------------------------------

def painting_sets(style: dict[str, Any]) -> tuple[PaintingSet, PaintingSet]:
    """The training and validation paintings of ``style.arbitrary=true`` (``style.val_count`` held out)."""
    paths, _ = style_list(style)
    train, val = split_paintings(paths, int(style.get("val_count", 8)))
    size = int(style.get("size") or 256)
    crop = style.get("crop")
    return PaintingSet(train, size, crop), PaintingSet(val, size, crop)


def style_list(style: dict[str, Any]) -> tuple[list[str], list[str]]:
    """(paths, names) of the styles of the ``style`` group: ``image`` (one), or ``images`` (a list or a folder)."""
    image, images = style.get("image"), style.get("images")
    if image and images:
        raise UserError("style.image and style.images are both set; pass one painting with style.image or several "
                        "with style.images")
    if not image and not images:
        raise UserError("style.image is not set; pass style.image=/path/to/painting.jpg (or style.images=[a.jpg,b.jpg] "
                        "or a folder, for one network holding several styles)")
    if image:
        name = style.get("name")
        return [str(image)], [str(name) if name else Path(str(image)).stem]
    if style.get("name"):
        raise UserError("style.name names a single style; with style.images the names are the file names")
    if isinstance(images, str):
        folder = Path(images).expanduser()
        paths = [str(p) for p in find_images(folder, "style.images")] if folder.is_dir() else [images]
    else:
        paths = [str(p) for p in images]
    seen: dict[str, str] = {}
    for p in paths:
        stem = Path(p).stem
        if stem in seen:
            raise UserError(f"style images {seen[stem]} and {p} have the same name {stem!r}; styles are named after "
                            f"their files, so rename one")
        seen[stem] = p
    return paths, [Path(p).stem for p in paths]


# --- the module ----------------------------------------------------------------------------------

def check_model(model: dict[str, Any], style: dict[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
    """The ``model`` group as (architecture, constructor arguments), checked by building the network once (a few
    milliseconds; with ``style.dim`` when ``style.arbitrary``): a wrong type, choice, width or count is one sentence
    naming ``model.KEY``."""
    model = dict(model)
    arch = model.pop("architecture", "johnson")
    model.pop("num_styles", None)
    cls = model_class(arch)
    check_arguments(cls, model, "model")
    trial = dict(model)
    if (style or {}).get("arbitrary"):
        dim = (style or {}).get("dim", DEFAULT_STYLE_DIM)
        if isinstance(dim, bool) or not isinstance(dim, int):
            raise UserError(f"style.dim={dim!r} must be a whole number (the length of the style vector)")
        trial["style_dim"] = dim
    try:
        # Built aside: the global random state (which initialises the real network later) is left untouched.
        with torch.random.fork_rng(devices=[]):
            create_model(arch, **trial)
    except ValueError as exc:  # the architecture's own checks ("channels must be 3 positive widths ...")
        key = str(exc).split(" ", 1)[0]
        named = key in inspect.signature(cls).parameters
        raise UserError(f"model.{exc}" if named else f"the {arch} network's settings are invalid: {exc}") from None
    return arch, model


def build_module(cfg: dict[str, Any]) -> StyleTransferModule:
    """The LightningModule of ``cfg`` (network from the registry, loss, optimizer, styles), checked first."""
    style = cfg.get("style") or {}
    arbitrary = bool(style.get("arbitrary", False))
    paths, names = style_list(style)
    size = style.get("size")
    extra: dict[str, Any] = {}
    if arbitrary:
        train, val = split_paintings(paths, int(style.get("val_count", 8)))
        source = style.get("images") or style.get("image")
        extra = {"arbitrary": True, "style_dim": int(style.get("dim", DEFAULT_STYLE_DIM)),
                 "paintings": {"source": source if isinstance(source, str) else f"{len(paths)} listed files",
                               "train": len(train), "val": val}}
        paths, names = [], []
        if size is None:
            raise UserError("style.arbitrary=true needs style.size (the painting crop in px, e.g. 256)")
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < MIN_SIZE):
        raise UserError(f"style.size={size!r} must be a number of pixels >= {MIN_SIZE} (each painting's longer side), "
                        f"or null to keep the paintings' own size")
    arch, model = check_model(cfg.get("model") or {}, style)
    check_arguments(PerceptualLoss, cfg.get("loss") or {}, "loss")
    node, _ = split_optim(cfg.get("optim"))
    check_arguments(locate(node["_target_"], "optim"), {k: v for k, v in node.items() if k != "_partial_"}, "optim")
    kwargs = dict(style_images=paths, style_names=names, style_size=size,
                  network={"architecture": arch, **model}, loss=cfg.get("loss") or {}, optim=cfg.get("optim") or {},
                  channels_last=cfg.get("channels_last", False), compile=cfg.get("compile", False),
                  on_nonfinite=cfg.get("on_nonfinite", "stop"), seed=int(cfg.get("seed", 0)),
                  init_from=cfg.get("init_from"), train_only=cfg.get("train_only"), **extra)
    check_arguments(StyleTransferModule, kwargs, "config")
    return StyleTransferModule(**kwargs)


# --- logger and callbacks ------------------------------------------------------------------------

def build_callbacks(cfg: dict[str, Any], run_dir: Path) -> list[pl.Callback]:
    """The ``callbacks`` group: ``{name: {_target_: ..., **arguments}}``; a null entry is switched off.

    The preview callback gets the run folder (its PNG files go to ``<run>/previews``). Progress bars are
    left out when ``trainer.enable_progress_bar=false``.
    """
    from pytorch_lightning.callbacks import ProgressBar

    out: list[pl.Callback] = []
    bars = (cfg.get("trainer") or {}).get("enable_progress_bar") is not False
    for name, node in (cfg.get("callbacks") or {}).items():
        if not node:
            continue
        if not isinstance(node, dict) or "_target_" not in node:
            raise UserError(f"callbacks.{name} must be a mapping with a _target_ (a Lightning callback class)")
        target = locate(node["_target_"], f"callbacks.{name}")
        extra = {"dirpath": str(run_dir)} if "dirpath" in inspect.signature(target).parameters \
            and node.get("dirpath") is None else {}
        callback = instantiate({k: v for k, v in node.items() if k != "dirpath" or v is not None},
                               f"callbacks.{name}", **extra)
        if not isinstance(callback, pl.Callback):
            raise UserError(f"callbacks.{name}: {node['_target_']} is not a Lightning callback")
        if isinstance(callback, ProgressBar) and not bars:
            continue
        out.append(callback)
    return out


# --- paths known to fail -------------------------------------------------------------------------

def _trains_on_cpu(trainer_cfg: dict[str, Any]) -> bool:
    accelerator = str(trainer_cfg.get("accelerator", "auto")).lower()
    if accelerator == "cpu":
        return True
    if accelerator != "auto":
        return False
    import torch

    mps = getattr(torch.backends, "mps", None)
    return not torch.cuda.is_available() and not (mps is not None and mps.is_available())


def avoid_known_failures(cfg: dict[str, Any], say: Any = print) -> dict[str, Any]:
    """``cfg`` with a path known to fail on this CPU (:mod:`fastnst.inference.known_failures`) replaced by the one
    that works there, said in one sentence; ``known_failures=ignore`` keeps the requested path (the sentence is
    still said), any other value than ``avoid`` or ``ignore`` is one sentence of its own."""
    mode = cfg.get("known_failures", "avoid")
    if mode not in ("avoid", "ignore"):
        raise UserError(f"known_failures={mode!r} is not valid; choose avoid (run what works on this CPU, the "
                        f"default) or ignore (run the requested path anyway)")
    trainer_cfg = dict(cfg.get("trainer") or {})
    if not _trains_on_cpu(trainer_cfg):
        return cfg
    precision = known_failures.lightning_precision(trainer_cfg.get("precision", "32-true"))
    compile = bool(cfg.get("compile", False))
    rule = known_failures.find("train", precision, compile)
    if rule is None:
        return cfg
    requested = f"trainer.precision={trainer_cfg.get('precision')} with compile={str(compile).lower()}"
    if mode == "ignore":
        say(f"fastnst: warning: {rule.sentence(requested, applied=False)} (known_failures=ignore: running it anyway)")
        return cfg
    say(f"fastnst: {rule.sentence(requested, applied=True, escape='known_failures=ignore runs the requested path anyway')}")
    return {**cfg, **rule.avoid}
