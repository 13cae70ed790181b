"""Where and how a model stage computes: its device, its precision (one rule for every stage) and its threads.

The rule (`precision: auto`): bfloat16 autocast on a CUDA GPU that supports bf16 and on a CPU with bfloat16
matrix units (AMX-BF16 or AVX512-BF16: Intel Sapphire Rapids and later, AMD Zen 4 and later), fp32 elsewhere,
unless the stage's measured quality gate failed (then its `auto` stays fp32; `auto_bf16=False`). `fp32` is
always one setting away and exact. Autocast keeps weights and optimizer state in fp32: only the matrix
products run in bf16.

A stage declares that its output depends on precision with a `PrecisionUse` (the parameter that sets it, the
settings it supports). The setting is resolved once, where the plan is made: `PrecisionUse.key` puts the
result in the stage key (so an fp32 machine and a bf16 machine never share a cached output by accident), and
`PrecisionUse.planned` hands the same result to the build through its context, so a Dask or Ray worker whose
own hardware would pick otherwise still computes what the key says.
"""
from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from tasks.errors import BadInputError

CPU_BF16_FLAGS = ("amx_bf16", "avx512_bf16")  # /proc/cpuinfo names of the bf16 matrix/vector units
# a precision setting's mark: the key holds what it resolves to (the stage's fingerprint), not the setting, so
# `auto` resolved to bf16 and an explicit `bf16` are one dataset
RESOLVED_IN_KEY: dict = {"cache_key": False}
# every precision setting; each stage says which of them it supports (PrecisionUse.supports)
PrecisionSetting = Literal["auto", "fp32", "bf16", "fp16", "int8"]
# a device's measured choice for `auto`: {"name", "reason", "timings"} (tasks/calibrate.py `measured`)
Measure = Callable[[str], dict[str, Any]]


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The CPU feature flags Linux reports (empty where /proc/cpuinfo does not exist)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def cpu_bf16_flags() -> tuple[str, ...]:
    """The bf16 units this CPU has, by their cpuinfo names; torch's own checks where cpuinfo says nothing."""
    found = tuple(flag for flag in CPU_BF16_FLAGS if flag in cpu_flags())
    if found or cpu_flags():
        return found
    import torch

    checks = (("amx_bf16", "_is_amx_tile_supported"), ("avx512_bf16", "_is_avx512_bf16_supported"))
    return tuple(flag for flag, name in checks if getattr(torch.cpu, name, lambda: False)())


def pick_device(setting: str = "auto", field: str = "device") -> str:
    """`auto`: cuda when torch sees a GPU, else cpu; `cuda` without a GPU is bad input."""
    import torch

    if setting == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if setting == "cuda" and not torch.cuda.is_available():
        raise BadInputError("cuda was asked for, but torch sees no CUDA device", field=field)
    return setting


@dataclass(frozen=True)
class Precision:
    """A resolved precision: what a stage computes in, on which device, and why."""

    name: str  # fp32, bf16, fp16 or int8
    device: str  # cpu or cuda
    reason: str
    timings: dict[str, float] | None = None  # the calibration `auto` was chosen by (tasks/calibrate.py)

    @property
    def load_dtype(self) -> Any:
        """The dtype of weights that do not train (a base model under LoRA, a model being evaluated): the
        autocast dtype, on a CPU as on a GPU; what trains (the adapter) and the optimizer state stay fp32. On 2
        CPU cores a bf16 SmolLM2 evaluates 1.3x faster than an fp32 one under autocast, which casts every
        weight and activation at every call; the losses measured the same to 1e-5 nats (benchmarks evaluate)."""
        import torch

        return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.name, torch.float32)

    @property
    def autocast_dtype(self) -> Any:
        import torch

        return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.name)

    def autocast(self) -> Any:
        """The autocast context of this precision (nothing for fp32 and int8)."""
        import torch

        dtype = self.autocast_dtype
        return torch.autocast(self.device, dtype=dtype) if dtype is not None else contextlib.nullcontext()

    def stats(self) -> dict[str, Any]:
        """For a stage's manifest: what was used and why (the CPU flags seen included)."""
        return {"precision": self.name, "device": self.device, "precision_reason": self.reason,
                "cpu_bf16_flags": list(cpu_bf16_flags()),
                **({"precision_timings": self.timings} if self.timings else {})}


def resolve_precision(setting: str, device: str, *, field: str, auto_bf16: bool = True,
                      gate_note: str = "", measure: Measure | None = None) -> Precision:
    """The precision a stage runs in. `auto` where the hardware has bf16: the faster of fp32 and bf16 on this
    machine by `measure` (tasks/calibrate.py's record of the stage's kind of work; without one, bf16).
    `auto_bf16=False`: the stage's bf16 missed its quality gate, so `auto` stays fp32 there (`gate_note` says
    which); an explicit `bf16` still runs where the hardware has it."""
    import torch

    if setting == "auto":
        if device == "cuda" and not torch.cuda.is_bf16_supported():
            return Precision("fp32", device, "auto: this GPU has no bf16")
        flags = cpu_bf16_flags()
        if device == "cpu" and not flags:
            return Precision("fp32", device, f"auto: the CPU has none of {', '.join(CPU_BF16_FLAGS)}")
        if not auto_bf16:
            return Precision("fp32", device, f"auto: bf16 missed this stage's quality gate{gate_note}")
        if measure is not None:
            return Precision(device=device, **measure(device))
        return Precision("bf16", device, "auto: CUDA GPU with bf16" if device == "cuda" else
                         f"auto: the CPU has {', '.join(flags)}")
    if setting == "bf16":
        if device == "cpu" and not cpu_bf16_flags():
            raise BadInputError(f"bf16 on this CPU needs AMX-BF16 or AVX512-BF16 ({' or '.join(CPU_BF16_FLAGS)} in "
                                "/proc/cpuinfo), and it has neither: use auto or fp32", field=field)
        if device == "cuda" and not torch.cuda.is_bf16_supported():
            raise BadInputError("bf16 needs a GPU that supports it (Ampere or later): use auto, fp16 or fp32",
                                field=field)
    if setting == "fp16" and device != "cuda":
        raise BadInputError("fp16 needs a CUDA GPU; use auto, bf16 or fp32 on the CPU", field=field)
    if setting == "int8" and device != "cpu":
        raise BadInputError("int8 (dynamic quantization) runs on the CPU only; use auto or bf16 on a GPU",
                            field=field)
    return Precision(setting, device, "asked for")


def _auto_device(params: Any) -> str:
    return "auto"


@dataclass(frozen=True)
class PrecisionUse:
    """A stage's declaration that its output depends on precision: the parameter that sets it (None where these
    parameters run no model), the settings the stage supports, its device setting, whether bf16 held the stage's
    quality gate, and the name of its entry in the key material."""

    setting: Callable[[Any], str | None]
    field: str
    supports: tuple[str, ...] = ("auto", "fp32", "bf16")
    device: Callable[[Any], str] = _auto_device
    auto_bf16: bool = True
    entry: str = "precision"
    measure: Measure | None = None  # how `auto` is measured: tasks/calibrate.py `measured(kind)`

    def resolve(self, params: Any) -> Precision | None:
        """The precision these parameters run in on this machine (None: no model runs)."""
        setting = self.setting(params)
        if setting is None:
            return None
        if setting not in self.supports:
            raise BadInputError(f"precision {setting!r}: this stage computes in {', '.join(self.supports)}",
                                field=self.field)
        return resolve_precision(setting, pick_device(self.device(params), self.field), field=self.field,
                                 auto_bf16=self.auto_bf16, measure=self.measure)

    def key(self, params: Any) -> dict[str, str]:
        """Stage-key material, read where the plan is made: what the setting resolves to (the device kind is not
        in it: fp32 on a GPU and on a CPU agree to rounding)."""
        resolved = self.resolve(params)
        return {self.entry: resolved.name} if resolved is not None else {}

    def planned(self, params: Any, fingerprint: Mapping[str, Any] | None) -> Precision:
        """What the build computes in: the precision the plan resolved (the stage key's `fingerprint`) on this
        machine's device, even where this machine would resolve the setting otherwise (the reason says so)."""
        device = pick_device(self.device(params), self.field)
        name = (fingerprint or {}).get(self.entry)
        try:
            here = self.resolve(params)
        except BadInputError as exc:  # e.g. bf16 planned on a machine with bf16 units, built on one without
            if name is None:
                raise
            here, note = None, str(exc)
        if here is not None and (name is None or (here.name == name and here.device == device)):
            return here
        if here is not None:
            note = f"this machine would pick {here.name}: {here.reason}"
        if name == "fp16" and device != "cuda" or name == "int8" and device != "cpu":
            raise BadInputError(f"the plan resolved {self.setting(params)} to {name}, which does not run on this "
                                f"machine's {device} ({note}): plan and build where the device is the same, or set "
                                f"{self.field} explicitly", field=self.field)
        return Precision(name, device, f"{self.setting(params)} resolved to {name} where the plan was made; {note}")


def cast_frozen_matmuls(model: Any, precision: Precision) -> int:
    """Cast the weights of the model's Linear layers to the autocast dtype once, where autocast would cast them
    at every call (and again in the backward pass): for weights that never train (a base model under LoRA, a
    model being evaluated) the matrix products see the same numbers, without the copy. Only on the CPU (a GPU
    loads half precision already); the output projection keeps its dtype (it may share its weight with the
    input embeddings, which autocast does not cast). Returns how many layers were cast."""
    import torch

    dtype = precision.autocast_dtype
    if precision.device != "cpu" or dtype is None:
        return 0
    output = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    cast = 0
    for module in model.modules():
        if isinstance(module, torch.nn.Linear) and module is not output and module.weight.dtype != dtype:
            module.to(dtype)
            cast += 1
    return cast


def available_cores() -> int:
    """The cores this process may run on (its affinity mask: a container's or taskset's limit), not the host's."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def use_available_cores() -> int:
    """Set torch's intra-op threads to the cores this process may use (torch counts the host's physical cores,
    which in a container or under taskset over-subscribes); returns the count."""
    import torch

    cores = available_cores()
    if torch.get_num_threads() != cores:
        torch.set_num_threads(cores)
    return cores
