"""`precision: auto` chosen by measurement: on first use on a machine, each kind of model work times its
candidate precisions on a short workload and keeps the fastest; the choice is cached under the sftflow home,
keyed by the machine (CPU model, flags, cores, torch's version, the GPU).

Flags alone mislead: a CPU with AVX512-BF16 but no AMX ("Intel Xeon Processor" cloud VMs) runs bf16 autocast
slower than fp32 (MiniLM embedding 42 against 66 rows/s, SmolLM2 LoRA 127 against 177 tokens/s), while one with
AMX runs it 2.7-3.6x faster. The workloads are the shapes sftflow runs: the bundled MiniLM encoder (embed, comet
scoring and training) and a SmolLM2-135M-shaped causal LM (4 of its 30 layers: the ratio is per layer) for
training, loss passes and generation. A candidate must beat fp32 by `MARGIN` to be kept: near a tie the exact
path wins. Only paths that held the stage's quality gate are candidates (a stage whose bf16 missed its gate
never calibrates). `sftflow doctor` prints the records; `calibrate(kind, force=True)` measures again.
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from storage.home import sftflow_home

MARGIN = 0.05  # bf16 is kept only when at least 5% faster than fp32 (the machine's noise is about that)
ROUNDS = 3
KINDS = ("encoder-inference", "encoder-training", "lm-training", "lm-inference")


@dataclass(frozen=True)
class Calibration:
    kind: str
    device: str
    choice: str
    seconds: dict[str, float]  # each candidate's time on the workload (the best of ROUNDS runs)
    measured: str  # when

    @property
    def reason(self) -> str:
        timings = ", ".join(f"{name} {s:.3f} s" for name, s in self.seconds.items())
        return f"auto: measured on this machine ({self.kind}: {timings}): {self.choice} is fastest"


def machine() -> dict[str, Any]:
    """What a calibration holds for: the CPU (model, flags, cores), torch's version and the GPU."""
    import torch

    from tasks.device import available_cores, cpu_flags

    model = next((line.split(":", 1)[1].strip() for line in _cpuinfo().splitlines()
                  if line.startswith("model name")), platform.processor())
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"cpu": model, "flags": hashlib.sha256(" ".join(sorted(cpu_flags())).encode()).hexdigest()[:16],
            "cores": available_cores(), "torch": torch.__version__, "gpu": gpu}


def _cpuinfo() -> str:
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""


def cache_file() -> Path:
    """$SFTFLOW_CALIBRATION_DIR (machines or sessions that share it), else the sftflow home's calibration/."""
    identity = hashlib.sha256(json.dumps(machine(), sort_keys=True).encode()).hexdigest()[:16]
    folder = os.environ.get("SFTFLOW_CALIBRATION_DIR") or sftflow_home() / "calibration"
    return Path(folder) / f"{identity}.json"


def recorded() -> dict[str, Calibration]:
    """This machine's calibrations, by `kind@device`."""
    try:
        data = json.loads(cache_file().read_text())
    except (OSError, ValueError):
        return {}
    return {name: Calibration(**record) for name, record in data.get("calibrations", {}).items()}


def calibrate(kind: str, device: str, candidates: tuple[str, ...] = ("fp32", "bf16"), force: bool = False
              ) -> Calibration:
    """The fastest candidate for `kind` on `device`: recorded, else measured now (seconds) and recorded."""
    name = f"{kind}@{device}"
    known = recorded().get(name)
    if known is not None and not force and set(known.seconds) == set(candidates):
        return known
    workload = WORKLOADS[kind](device)
    seconds = {candidate: float("inf") for candidate in candidates}
    for _ in range(ROUNDS):  # interleaved, the best of three: a moment of load elsewhere does not decide
        for candidate in candidates:
            seconds[candidate] = min(seconds[candidate], workload(candidate))
    fastest = min(candidates, key=seconds.__getitem__)
    near_tie = "fp32" in seconds and seconds[fastest] > seconds["fp32"] * (1 - MARGIN)
    choice = "fp32" if near_tie else fastest
    made = Calibration(kind, device, choice, {c: round(s, 4) for c, s in seconds.items()},
                       time.strftime("%Y-%m-%d %H:%M:%S"))
    _record(name, made)
    return made


def _record(name: str, made: Calibration) -> None:
    path = cache_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {"machine": machine(), "calibrations": {k: asdict(v) for k, v in recorded().items()}}
    data["calibrations"][name] = asdict(made)
    temporary = path.with_suffix(f".{os.getpid()}.tmp")
    temporary.write_text(json.dumps(data, indent=1))
    temporary.replace(path)  # two processes calibrating at once: the last whole file wins


def measured(kind: str) -> Callable[[str], dict[str, Any]]:
    """`auto` for `kind` on a device, as tasks/device.py's `resolve_precision` takes it."""
    def measure(device: str) -> dict[str, Any]:
        made = calibrate(kind, device)
        return {"name": made.choice, "reason": made.reason, "timings": made.seconds}

    return measure


# -- the workloads: each returns a function timing one run at a precision ------------------------------------
def _timed(run: Callable[[], Any]) -> float:
    began = time.perf_counter()
    run()
    return time.perf_counter() - began


def _encoder(device: str) -> Callable[[str], float]:
    from tasks.embed import encode_features, load_model

    texts = [f"Instruction: explain item {i} of the list. Response: " + "a plain answer with some detail, " * 8
             for i in range(48)]
    models: dict[str, Any] = {}

    def run(precision: str) -> float:
        if precision not in models:
            models[precision] = load_model(None, device, precision)
            encode_features(models[precision], texts[:8], 8, precision=precision)  # warm-up
        return _timed(lambda: encode_features(models[precision], texts, 16, precision=precision))

    return run


def _encoder_training(device: str) -> Callable[[str], float]:
    import torch

    from tasks.embed import load_model

    model = load_model(None, device, "fp32")
    transformer = model[0].auto_model.train()
    batch = model.preprocess([f"Instruction: item {i}. Response: " + "some answer text, " * 12 for i in range(16)])
    batch = {k: v.to(device) for k, v in batch.items() if k in ("input_ids", "attention_mask")}

    def run(precision: str) -> float:
        def step() -> None:
            with torch.autocast(device, dtype=torch.bfloat16, enabled=precision == "bf16"):
                out = transformer(**batch).last_hidden_state.float().pow(2).mean()
            out.backward()
            transformer.zero_grad(set_to_none=True)

        step()  # warm-up
        return _timed(lambda: (step(), step()))

    return run


def _small_lm(device: str) -> Any:
    """A SmolLM2-135M-shaped model with 4 of its 30 layers, random weights (speed does not depend on them)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(hidden_size=576, intermediate_size=1536, num_hidden_layers=4, num_attention_heads=9,
                         num_key_value_heads=3, vocab_size=49152, max_position_embeddings=2048,
                         tie_word_embeddings=True)
    return LlamaForCausalLM(config).to(device)


def _lm_training(device: str) -> Callable[[str], float]:
    import torch
    from peft import LoraConfig, TaskType, get_peft_model

    from tasks.device import Precision, cast_frozen_matmuls

    ids = torch.randint(0, 49152, (1, 384), device=device)
    lora = LoraConfig(task_type=TaskType.CAUSAL_LM, r=8, lora_alpha=16, lora_dropout=0.05,
                      target_modules=["q_proj", "k_proj", "v_proj", "o_proj"])  # train's defaults

    def run(precision: str) -> float:
        model = get_peft_model(_small_lm(device), lora)  # as train loads it: frozen base in the compute dtype
        cast_frozen_matmuls(model, Precision(precision, device, "calibration"))

        def step() -> None:
            with torch.autocast(device, dtype=torch.bfloat16, enabled=precision == "bf16"):
                loss = model(input_ids=ids, labels=ids).loss
            loss.backward()

        step()  # warm-up
        return _timed(step)

    return run


def _lm_inference(device: str) -> Callable[[str], float]:
    import torch

    from tasks.device import Precision, cast_frozen_matmuls

    ids = torch.randint(0, 49152, (4, 256), device=device)

    def run(precision: str) -> float:
        model = _small_lm(device).eval()
        cast_frozen_matmuls(model, Precision(precision, device, "calibration"))

        def forward() -> None:
            with torch.inference_mode(), torch.autocast(device, dtype=torch.bfloat16, enabled=precision == "bf16"):
                model(input_ids=ids)

        forward()  # warm-up
        return _timed(forward)

    return run


WORKLOADS: dict[str, Callable[[str], Callable[[str], float]]] = {
    "encoder-inference": _encoder, "encoder-training": _encoder_training, "lm-training": _lm_training,
    "lm-inference": _lm_inference}
