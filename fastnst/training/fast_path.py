"""The guard of the fast training path: a compiled half-precision run whose loss or gradients become non-finite in
its first steps has a broken fast path (issue 20: bf16 with torch.compile stopped at step 1 on AMX CPUs), not a
learning-rate problem, and stops with one sentence that says so and what to train with instead.

Paths already known to fail on a CPU are avoided before training starts (:mod:`fastnst.inference.known_failures`);
this guard catches the ones nobody has seen fail yet.
"""

from __future__ import annotations

from typing import Any

import torch

from fastnst.inference.known_failures import REPRODUCER, lightning_precision
from fastnst.inference.machine import cpu_summary

GUARD_STEPS = 20  # the guard is on while the global step is below this (the first steps of a run)


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or Inf: the run stops (its checkpoints so far are kept; the run says which, or that none
    was written yet). ``hint``: what to change, when the message does not say it itself."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint


def precision_of(module: Any) -> str:
    """fp32, bf16 or fp16: the trainer's precision, or the autocast dtype when a benchmark drives the step."""
    trainer = module._trainer
    if trainer is not None:
        return lightning_precision(trainer.precision)
    device = module.device.type
    if torch.is_autocast_enabled(device):
        return {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(torch.get_autocast_dtype(device), "fp32")
    return "fp32"


def fast_path_failure(module: Any, what: str) -> NonFiniteLossError | None:
    """The one-sentence error for ``what`` (e.g. "the training loss became nan") in the first steps of a compiled
    half-precision run of ``module`` (a StyleTransferModule); None otherwise (an ordinary non-finite loss)."""
    precision = precision_of(module)
    if not module.hparams.compile or precision == "fp32" or module.global_step >= GUARD_STEPS:
        return None
    where = f"this CPU ({cpu_summary()})" if module.device.type == "cpu" else f"this {module.device.type} device"
    return NonFiniteLossError(
        f"{what} at step {module.global_step} of a {precision} + compile run on {where}: this fast path does not train "
        f"here (issue 20: bf16 with torch.compile failed so on AMX CPUs); train with compile=false (e.g. "
        f"trainer.precision=bf16-mixed channels_last=true) or with trainer.precision=32 compile=true, and check the "
        f"machine with {REPRODUCER}")


def check_fast_path_gradients(module: Any) -> None:
    """Raise :func:`fast_path_failure` when the network's gradients are non-finite in the first steps of a compiled
    half-precision run: one optimizer step on them would make every weight NaN (the loss is finite until then)."""
    if module.global_step >= GUARD_STEPS or precision_of(module) == "fp32":
        return
    grads = [p.grad for p in module.network.parameters() if p.grad is not None]
    if grads and not all(bool(torch.isfinite(g).all()) for g in grads):
        error = fast_path_failure(module, "the gradients became non-finite")
        if error is not None:
            raise error
