"""The LightningModule: owns the transformation network and the perceptual loss; steps and optimizers.

Constructor arguments are plain values (dicts, floats, strings), so ``save_hyperparameters()`` is
clean and checkpoints load without Hydra. The loss network has no parameters and no persistent state
(see :mod:`fastnst.losses.vgg`), so checkpoints hold the network, the style targets and the optimizer only.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch

from fastnst.errors import UserError
from fastnst.formats.checkpoint import write_info
from fastnst.formats.metadata import META_KEY, ModelInfo, TrainingInfo
from fastnst.losses import PerceptualLoss
from fastnst.media.image import load_style_image
from fastnst.media.painting import painting_tensor
from fastnst.models import create_model
from fastnst.models.encoder import DEFAULT_STYLE_DIM
from fastnst.training.add_styles import BaseNetwork, NormOnlyTraining, check_new_names, check_train_only, extend, load_base
from fastnst.training.arbitrary import from_prediction
from fastnst.training.checkpoint_state import restore_rng_states, save_rng_states, upgrade_v1
from fastnst.training.draws import step_seed, style_indices
from fastnst.training.fast_path import NonFiniteLossError, check_fast_path_gradients, fast_path_failure

# Settings of the optim group that are fastnst's learning-rate schedule, not optimizer arguments.
SCHEDULE_KEYS = ("scheduler", "warmup_steps", "min_lr_ratio", "step_size", "gamma")
DEFAULT_OPTIMIZER = {"_target_": "torch.optim.Adam", "lr": 1e-3}
TARGET_REPORT_BYTES = 32_000_000  # style targets at least this large are reported when a run starts


def split_optim(optim: dict[str, Any] | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """The optim group as (optimizer node for ``hydra.utils.instantiate``, schedule settings)."""
    node = {**DEFAULT_OPTIMIZER, **(optim or {})}
    schedule = {k: node.pop(k) for k in SCHEDULE_KEYS if k in node}
    node["_partial_"] = True  # built later, with the parameters
    return node, schedule


class StyleTransferModule(pl.LightningModule):
    """Trains a network of the registry for one style or several (a conditional network).

    Args:
        style_images: paths of the paintings, one per style.
        style_names: names of the styles (default: the file names without extension).
        style_size: longer side the style images are resized to before their Gram targets are taken
            (None keeps their size).
        network: ``{"architecture": name, **constructor arguments}`` (``num_styles`` is set from the styles).
        loss: :class:`fastnst.losses.PerceptualLoss` arguments (layers, weights, gram norm, VGG weights).
        optim: the optimizer (``_target_`` and its arguments, Adam by default) and the schedule: ``scheduler``
            None, ``cosine`` (to ``min_lr_ratio`` at ``trainer.max_steps``) or ``step`` (x ``gamma`` every
            ``step_size`` steps); ``warmup_steps`` of linear warm-up either way.
        channels_last: NHWC memory layout for the network and VGG (faster convolutions on GPUs).
        compile: ``torch.compile`` the network and the loss network.
        on_nonfinite: ``stop`` (raise, keep the last good checkpoint) or ``skip`` (skip the batch, count it).
        seed: seed of the per-step style draw.
        init_from: a trained checkpoint whose network gets the styles of ``style_images`` added after its own
            (with ``train_only="norm"``, see :mod:`fastnst.training.add_styles`); or a network that takes any
            painting, whose prediction for the one painting of ``style_images`` starts a one-style network
            (:mod:`fastnst.training.arbitrary`).
        train_only: None (every weight trains) or ``"norm"`` (only the new styles' norm parameters).
        arbitrary: train a network that takes any painting: ``style_images`` is empty, each batch brings its
            photos' paintings (:mod:`fastnst.training.paintings`), an encoder maps them to ``style_dim`` vectors.
        paintings: what the checkpoint records of an arbitrary run's paintings (source, counts, held-out files).
    """

    def __init__(self, style_images: list[str], style_names: list[str] | None = None, style_size: int | None = 512,
                 network: dict[str, Any] | None = None, loss: dict[str, Any] | None = None,
                 optim: dict[str, Any] | None = None, channels_last: bool = False, compile: bool = False,
                 on_nonfinite: str = "stop", seed: int = 0, init_from: str | None = None,
                 train_only: str | None = None, arbitrary: bool = False, style_dim: int = DEFAULT_STYLE_DIM,
                 paintings: dict[str, Any] | None = None) -> None:
        super().__init__()
        _, schedule = split_optim(optim)
        if schedule.get("scheduler") not in (None, "none", "cosine", "step"):
            raise UserError(f"optim.scheduler must be null, cosine or step, got {schedule['scheduler']!r}")
        if on_nonfinite not in ("stop", "skip"):
            raise UserError(f"on_nonfinite must be 'stop' or 'skip', got {on_nonfinite!r}")
        if not style_images and not arbitrary:
            raise UserError("no style image given; pass style.image=/path/to/painting.jpg")
        if arbitrary and (init_from or train_only):
            raise UserError("style.arbitrary=true trains a network that takes any painting from scratch; drop init_from "
                            "and train_only (a per-painting network starts from one with init_from=ARB.ckpt "
                            "style.image=PAINTING)")
        self.save_hyperparameters()
        self.arbitrary = bool(arbitrary)
        new_names = list(style_names or [Path(p).stem for p in style_images])
        net_cfg = dict(network or {})
        arch = net_cfg.pop("architecture", "johnson")
        # Paintings first: an unreadable one is named before the base network or VGG19 is loaded.
        images = [load_style_image(p, style_size) for p in style_images]
        self.base: BaseNetwork | None = None
        if init_from:
            self.base = load_base(init_from, arch, create_model(arch, **net_cfg).config())
        check_train_only(train_only, init_from, self.base is not None and self.base.network is not None)
        self.norm_only: NormOnlyTraining | None = None
        if self.base is not None and self.base.network is not None:  # a per-painting network from a prediction
            if len(style_images) != 1:
                raise UserError(f"init_from {init_from} takes any painting: start one per-painting network from its "
                                f"prediction with style.image=PAINTING (one painting), not {len(style_images)}")
            painting = painting_tensor(style_images[0], self.base.info.painting_size or 256)
            self.network = from_prediction(self.base.network, arch, painting)
            self.style_names, self.trained_styles = new_names, [0]
            self.base = None  # nothing of it is kept: the new network holds one style of its own
            if train_only == "norm":
                self.norm_only = NormOnlyTraining(self.network, 0)
        elif self.arbitrary:
            self.style_names, self.trained_styles = [], []
            encoder = {**dict(net_cfg.pop("encoder", None) or {}), "painting_size": int(style_size or 256)}
            self.network = create_model(arch, **net_cfg, style_dim=int(style_dim), encoder=encoder)
        else:
            if self.base is not None:
                check_new_names(self.base, new_names, list(style_images))
            old = self.base.styles if self.base else []
            self.style_names = old + new_names
            # The network's indices of the styles this run trains, in the order of the loss's style targets.
            self.trained_styles = list(range(len(old), len(self.style_names)))
            self.network = create_model(arch, **{**net_cfg, "num_styles": len(self.style_names)})
            if self.base is not None:
                extend(self.network, self.base)
                self.base.state = {}  # in the network now
                self.norm_only = NormOnlyTraining(self.network, len(old))
        self.loss_fn = PerceptualLoss(**(loss or {}), style_images=images or None)
        self._ignore_in_ddp()
        self._report_target_memory()
        self.skipped_images = 0
        self.skipped_batches = 0
        self._last_batch_time: float | None = None
        self._micro_step, self._micro = -1, 0
        # What steps call: the network and the loss, or their torch.compile wrappers (setup). Set with
        # object.__setattr__ so they stay out of the module tree: as registered submodules they would be
        # saved a second time in every checkpoint (fastnst 0.1 did, under "_net_fn." and "_loss_call.").
        object.__setattr__(self, "_net_fn", self.network)
        object.__setattr__(self, "_loss_call", self.loss_fn)

    @property
    def num_styles(self) -> int:
        """Styles of the network (old and new ones when adding styles)."""
        return len(self.style_names)

    def _ignore_in_ddp(self) -> None:
        # DDP broadcasts every buffer from rank 0 before each forward; the loss's buffers (VGG19 weights and the
        # style targets: 150 MB for 64 styles at the seed layers) are the same on every rank, computed there.
        from torch.nn.parallel import DistributedDataParallel

        names = [f"loss_fn.{n}" for n, _ in self.loss_fn.named_buffers()]
        DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(self, names)

    @property
    def target_bytes(self) -> int:
        """Bytes of the style targets (Gram matrices of every trained style at every style layer)."""
        return sum(t.numel() * t.element_size() for t in self.loss_fn.style_term.targets().values())

    def _report_target_memory(self) -> None:
        targets = self.loss_fn.style_term.targets()
        total = self.target_bytes
        if total >= TARGET_REPORT_BYTES:
            from pytorch_lightning.utilities import rank_zero_info

            n = len(self.trained_styles)
            rank_zero_info(f"fastnst: the style targets of {n} styles take {total / 1e6:.0f} MB ({total / n / 1e6:.2f} MB "
                           f"per style at {', '.join(targets)}), on every device and in every checkpoint")

    # --- setup -----------------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        if self.hparams.channels_last:
            self.to(memory_format=torch.channels_last)
        if self.hparams.compile:
            # Kept outside the module tree (see __init__): state-dict keys stay free of "_orig_mod.".
            object.__setattr__(self, "_net_fn", torch.compile(self.network))
            object.__setattr__(self, "_loss_call", torch.compile(self.loss_fn))

    def _prepare(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.hparams.channels_last else x

    def style_weights(self, indices: torch.Tensor) -> torch.Tensor | None:
        """[N] network style indices as the network's [N, S] one-hot style weights (None for a one-style network)."""
        if self.num_styles == 1:
            return None
        return torch.nn.functional.one_hot(indices, self.num_styles).to(self.device, torch.float32)

    def forward(self, x: torch.Tensor, styles: torch.Tensor | None = None) -> torch.Tensor:
        """Stylize [N, 3, H, W] images in [0, 1] with styles ``styles`` ([N] network style indices; None: the
        first trained style for all)."""
        if styles is None and self.num_styles > 1:
            styles = torch.full((x.shape[0],), self.trained_styles[0], dtype=torch.long)
        weights = None if styles is None else self.style_weights(styles)
        return self._net_fn(self._prepare(x), weights)

    # --- steps -----------------------------------------------------------------------------------
    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        now = time.perf_counter()
        if self._last_batch_time is not None:
            dt = now - self._last_batch_time
            ips = batch[0].shape[0] * self.trainer.world_size / max(dt, 1e-9)
            self.log("train/img_per_s", ips, prog_bar=True, on_step=True, on_epoch=False, batch_size=1, rank_zero_only=True)
        self._last_batch_time = now

    def _terms(self, x: torch.Tensor, slots: torch.Tensor | None, seed: int | None = None) -> dict[str, torch.Tensor]:
        """Loss terms of the network's output for [N] ``slots``: positions in ``trained_styles`` (which are the
        indices of the loss's style targets); None for a one-style network. ``seed`` seeds the loss's own random
        draws (the stability term's transforms)."""
        weights = None if slots is None else self.style_weights(self._trained[slots.cpu()])
        y = self._net_fn(x, weights)
        idx = None if slots is None else slots.to(x.device)
        stylize = (lambda z: self._net_fn(z, weights)) if self.loss_fn.needs_network else None
        return self._loss_call(y, x, styles=idx, stylize=stylize, per_image=slots is not None, seed=seed)

    @property
    def _trained(self) -> torch.Tensor:
        return torch.tensor(self.trained_styles, dtype=torch.long)

    def _draw_slots(self, batch: int) -> torch.Tensor | None:
        """The trained styles (as slots) of this batch's images, see :func:`style_indices`."""
        if self.num_styles == 1:
            return None
        if self._micro_step != self.global_step:  # the first micro-batch of an optimizer step
            self._micro_step, self._micro = self.global_step, 0
        else:
            self._micro += 1
        trainer = self._trainer  # None when a benchmark drives the step without a Trainer
        rank, world, acc = (trainer.global_rank, trainer.world_size, trainer.accumulate_grad_batches) \
            if trainer is not None else (0, 1, 1)
        return style_indices(self.global_step, batch, len(self.trained_styles), self.hparams.seed, rank, world,
                             self._micro, acc)

    def _painting_terms(self, x: torch.Tensor, paintings: torch.Tensor, seed: int | None = None
                        ) -> dict[str, torch.Tensor]:
        """Loss terms of the network's output for photos ``x`` [N, ...], each in the style of its own painting
        ``paintings`` [N, 3, P, P]: the encoder predicts the style vectors, the targets are the paintings' Grams."""
        paintings = self._prepare(paintings)
        vectors = self.network.encoder(paintings)
        y = self._net_fn(x, vectors)
        stylize = (lambda z: self._net_fn(z, vectors)) if self.loss_fn.needs_network else None
        return self._loss_call(y, x, stylize=stylize, seed=seed, style_grams=self.loss_fn.style_grams(paintings))

    def stylize_with(self, x: torch.Tensor, paintings: torch.Tensor) -> torch.Tensor:
        """[N, 3, H, W] photos in the style of [N or 1, 3, P, P] paintings (a network that takes a painting)."""
        vectors = self.network.encoder(self._prepare(paintings.to(self.device)))
        return self._net_fn(self._prepare(x.to(self.device)), vectors)

    def training_step(self, batch: tuple[Any, ...], batch_idx: int) -> torch.Tensor | None:
        x, skipped, *paired = batch
        self.skipped_images += int(skipped)
        x = self._prepare(x)
        trainer = self._trainer  # None when a benchmark drives the step without a Trainer
        rank = trainer.global_rank if trainer is not None else 0
        seed = step_seed(self.global_step, self.hparams.seed, rank)
        if self.arbitrary:
            slots = None
            terms = self._painting_terms(x, paired[0], seed)
        else:
            slots = self._draw_slots(x.shape[0])
            terms = self._terms(x, slots, seed)
        total = terms["total"]
        bad = ~torch.isfinite(total.detach())
        if trainer is not None and trainer.world_size > 1:  # all ranks must branch alike, or DDP's all-reduce hangs
            bad = trainer.strategy.reduce(bad.float(), reduce_op="sum") > 0
        if bad:
            error = fast_path_failure(self, f"the training loss became {total.item()}")
            if error is not None:
                raise error
            if self.hparams.on_nonfinite == "stop":
                raise NonFiniteLossError(f"the training loss became {total.item()} at step {self.global_step}",
                                         hint="lower optim.lr, or set on_nonfinite=skip to skip such batches")
            self.skipped_batches += 1
            self.log("train/nonfinite_skipped", float(self.skipped_batches), on_step=True, batch_size=1)
            return None
        n = x.shape[0]
        per_image = terms.pop("style_per_image", None)
        self.log("train/loss", total, prog_bar=True, batch_size=n)
        self.log_dict({f"train/{k}": v for k, v in terms.items() if k != "total"}, batch_size=n)
        if per_image is not None and slots is not None:
            self._log_per_style("train", per_image, slots)
        self.log("data/skipped_images", float(self.skipped_images), batch_size=1)
        if trainer is not None and trainer.optimizers:
            self.log("train/lr", trainer.optimizers[0].param_groups[0]["lr"], batch_size=1)
        return total

    def _log_per_style(self, stage: str, per_image: torch.Tensor, slots: torch.Tensor) -> None:
        """``<stage>/style/<name>``: the weighted style loss of each style present in the batch (this rank's)."""
        slots = slots.to(per_image.device)
        for s in slots.unique().tolist():
            value = per_image[slots == s].mean() * self.loss_fn.style_weight
            self.log(f"{stage}/style/{self.style_names[self.trained_styles[s]]}", value,
                     batch_size=int((slots == s).sum()), rank_zero_only=True)

    def validation_step(self, batch: tuple[Any, ...], batch_idx: int, dataloader_idx: int = 0) -> None:
        x, _, *paired = batch
        x = self._prepare(x)
        if self.arbitrary:  # loader 0 pairs the photos with training paintings, loader 1 with held-out ones
            terms = self._painting_terms(x, paired[0])
            prefix = "val/seen" if dataloader_idx == 0 else "val/unseen"
            self.log_dict({f"{prefix}/{k}": v for k, v in terms.items()}, batch_size=x.shape[0], sync_dist=True,
                          add_dataloader_idx=False)
            return
        # Every trained style on the same images, so that validation losses are comparable from step to step.
        for slot, s in enumerate(self.trained_styles):
            slots = None if self.num_styles == 1 else torch.full((x.shape[0],), slot, dtype=torch.long)
            terms = self._terms(x, slots)
            terms.pop("style_per_image", None)
            prefix = "val" if self.num_styles == 1 else f"val/{self.style_names[s]}"
            self.log_dict({f"{prefix}/{k}": v for k, v in terms.items()}, batch_size=x.shape[0], sync_dist=True)

    # --- optimizers ------------------------------------------------------------------------------
    def configure_optimizers(self) -> Any:
        from hydra.utils import instantiate

        node, schedule = split_optim(self.hparams.optim)
        # Frozen weights (train_only=norm) are not the optimizer's: no state is kept for them.
        opt = instantiate(node)([p for p in self.network.parameters() if p.requires_grad])
        scheduler, warmup = schedule.get("scheduler"), int(schedule.get("warmup_steps") or 0)
        if scheduler in (None, "none") and not warmup:
            return opt
        # max_steps, or the number of steps that max_epochs amounts to
        total = int(self._trainer.estimated_stepping_batches) if self._trainer is not None else 0
        floor = float(schedule.get("min_lr_ratio", 0.01))
        gamma, step_size = float(schedule.get("gamma", 0.5)), int(schedule.get("step_size", 10000))

        def factor(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            if scheduler == "cosine" and total > warmup:
                t = min(1.0, (step - warmup) / (total - warmup))
                return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * t))
            if scheduler == "step":
                return gamma ** ((step - warmup) // step_size)
            return 1.0

        sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        if self.norm_only is not None:
            self.norm_only.mask_gradients()
        if self.hparams.compile:
            check_fast_path_gradients(self)

    def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        super().optimizer_step(*args, **kwargs)
        if self.norm_only is not None:
            self.norm_only.restore()

    # --- checkpoints -----------------------------------------------------------------------------
    def model_info(self) -> ModelInfo:
        """What inference, export and resume need, without Hydra or the training config."""
        dm = getattr(self._trainer, "datamodule", None) if self._trainer is not None else None
        old = self.base.style_images if self.base is not None else []
        paintings = dict(self.hparams.paintings) if self.hparams.get("paintings") else None
        training = TrainingInfo(style_images=old + [str(p) for p in self.hparams.style_images],
                                style_size=self.hparams.style_size,
                                image_size=int(dm.image_size) if dm is not None and hasattr(dm, "image_size") else None,
                                global_step=int(self.global_step), loss=self.loss_fn.settings(),
                                skipped_images=int(self.skipped_images), skipped_batches=int(self.skipped_batches),
                                init_from=self.hparams.init_from,
                                trained_styles=[self.style_names[s] for s in self.trained_styles]
                                if self.base is not None else None, paintings=paintings)
        return ModelInfo(architecture=self.network.architecture, config=self.network.config(),
                         styles=list(self.style_names), training=training,
                         style_vectors=[] if self.arbitrary else None)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        write_info(checkpoint, self.model_info())
        save_rng_states(checkpoint)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        meta = checkpoint.get(META_KEY) or {}
        info = ModelInfo.from_dict(meta, "the checkpoint") if meta else None
        # Counts are rank 0's; other ranks start from 0 so that the summed report is not multiplied.
        trainer = getattr(self, "_trainer", None)
        first = trainer is None or trainer.global_rank == 0
        training = info.training if info is not None else None
        self.skipped_images = int(training.skipped_images) if first and training else 0
        self.skipped_batches = int(training.skipped_batches) if first and training else 0
        restore_rng_states(checkpoint.get("rng_states"))
        sd = checkpoint.get("state_dict", {})
        # Checkpoints written by a compiled module carry "_orig_mod." in their keys.
        for k in [k for k in sd if "_orig_mod." in k]:
            sd[k.replace("_orig_mod.", "")] = sd.pop(k)
        if info is not None and info.format_version < 2:
            upgrade_v1(checkpoint, dict(self.named_parameters()), list(self.network.parameters()))
