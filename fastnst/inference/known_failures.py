"""Fast paths known to fail on a class of CPU, and what runs instead.

A fast path that was measured to break (a NaN loss, a crash) on some CPUs is listed here with the CPU features,
the torch versions and the task it was seen with. ``fastnst train`` and ``fastnst stylize`` look the requested
path up (:func:`find`) before they start: a match is said in one sentence and the path that works there runs
instead (``known_failures=ignore`` in training runs it anyway). Nothing here is a guess about speed: an entry is a
failure someone observed, with the machine it was observed on.

Versions outside an entry's range are not assumed safe: training also stops a compiled half-precision run whose
loss or gradients become non-finite in its first steps with the same kind of sentence
(:mod:`fastnst.training.module`), and ``scripts/repro_bf16_compile.py`` checks a machine in one command.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch

from fastnst.inference.machine import cpu_features

REPRODUCER = "python scripts/repro_bf16_compile.py"


@dataclass(frozen=True)
class KnownFailure:
    """One observed failure of a path: ``task`` (train or infer) with ``precision`` and ``compile`` on a CPU that has
    every feature of ``cpu_features`` (names of :func:`fastnst.inference.machine.cpu_features`), under torch
    ``torch_from`` <= version < ``torch_before`` (``major.minor[.patch]``)."""

    task: str
    precision: str
    compile: bool
    cpu_features: tuple[str, ...]
    torch_from: str
    torch_before: str
    symptom: str  # what happens, as seen
    instead: str  # the settings that work there, as the user types them
    seen: str  # the machine and the report it was seen on
    avoid: dict[str, object]  # the path settings (compile, channels_last) changed to run what works there

    def sentence(self, requested: str, applied: bool, escape: str = "") -> str:
        """One sentence: what is known to fail here, and what runs (``applied``; ``escape`` says how to run the
        requested path anyway) or what to use instead."""
        cpu = " and ".join(self.cpu_features)
        what = (f"{requested} is known to {self.symptom} on CPUs with {cpu} under torch {self.torch_from}.x "
                f"(seen on {self.seen})")
        if applied:
            return f"{what}; running {self.instead} instead" + (f" ({escape})" if escape else "")
        return f"{what}; use {self.instead}"


KNOWN_FAILURES: tuple[KnownFailure, ...] = (
    KnownFailure(task="train", precision="bf16", compile=True, cpu_features=("AMX",),
                 torch_from="2.14", torch_before="2.15",
                 symptom="stop with a NaN loss at step 1",
                 instead="trainer.precision=bf16-mixed channels_last=true compile=false",
                 seen="a 2-core Intel Xeon with AMX-BF16, torch 2.14.1, issue 20; bf16 without compile and fp32 "
                      "with compile trained there",
                 avoid={"compile": False, "channels_last": True}),
)


def _version(text: str) -> tuple[int, ...]:
    parts = []
    for piece in text.split("+")[0].split("."):
        digits = "".join(c for c in piece if c.isdigit())
        if not digits:
            break
        parts.append(int(digits))
    return tuple(parts)


def find(task: str, precision: str, compile: bool, *, device: str = "cpu", features: Iterable[str] | None = None,
         torch_version: str | None = None) -> KnownFailure | None:
    """The known failure of running ``task`` with ``precision`` (fp32, bf16, fp16) and ``compile`` on ``device``
    (only CPUs have entries), for this CPU's features and torch version unless given; None when none is known."""
    if device != "cpu":
        return None
    have = set(cpu_features() if features is None else features)
    version = _version(torch_version or torch.__version__)
    for rule in KNOWN_FAILURES:
        if (rule.task == task and rule.precision == precision and rule.compile == compile
                and set(rule.cpu_features) <= have
                and _version(rule.torch_from) <= version < _version(rule.torch_before)):
            return rule
    return None


def lightning_precision(precision: object) -> str:
    """A Lightning ``trainer.precision`` value (``bf16-mixed``, ``16``, ``32-true`` ...) as fp32, bf16 or fp16."""
    text = str(precision).lower()
    if text.startswith("bf16"):
        return "bf16"
    if text.startswith("16"):
        return "fp16"
    return "fp32"


def avoid_for_inference(device: str, precision: str, channels_last: bool, compile: bool,
                        say: Any = print) -> tuple[bool, bool]:
    """``fastnst stylize``'s (channels_last, compile) with a path known to fail for inference on this CPU replaced by
    the one that works there, said in one sentence."""
    rule = find("infer", precision, compile, device=device)
    if rule is None:
        return channels_last, compile
    flags = "".join(f" --{k}" for k, on in (("channels-last", channels_last), ("compile", compile)) if on)
    say(f"fastnst: {rule.sentence(f'--precision {precision}{flags}', applied=True)}")
    return bool(rule.avoid.get("channels_last", channels_last)), bool(rule.avoid.get("compile", compile))
