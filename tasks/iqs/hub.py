"""A published IQS checkpoint imported into the store: `iqs.model: hf:OWNER/NAME[@REVISION]` (CaR's own is
hf:GyQAQ/Instruction-quality-scoring, xlm-roberta-large) or `hf:FOLDER`, a downloaded copy of such a repo.

The repo holds an InstructionMetric in COMET's layout: `checkpoints/*.ckpt` and `hparams.yaml` beside the
folder (what `comet.load_from_checkpoint` reads). The comet scorer's `iqs.train` turns it into a model artifact
like the ones it trains (model/ with the encoder's config and tokenizer, named by `pretrained_model` in
hparams.yaml), so scoring afterwards needs neither the hub nor the network. The hub is reached only with
SFTFLOW_ONLINE=1 (flows/settings.py); offline, a copy already in the local hub cache serves. Its commit (a local
folder: its content hash) is part of the key.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from storage.stage import StageContext, StageOutput
from tasks.errors import BadInputError
from tasks.ingest.hf import PREFIX, cached_snapshot, offline, parse_uri

CAR_CHECKPOINT = "hf:GyQAQ/Instruction-quality-scoring"
REPO_FILES = ["hparams.yaml", "checkpoints/*.ckpt"]
HOW_TO = ("set SFTFLOW_ONLINE=1 to download it, or download the repo yourself (hf download {name}) and give "
          "iqs.model: hf:/path/to/that/folder")


def is_hub_model(ref: str | None) -> bool:
    return bool(ref) and ref.startswith(PREFIX)


def snapshot(ref: str) -> Path:
    """The local folder of the repo `ref` names: a local folder, the hub cache's copy, or (online) a download."""
    source = parse_uri(ref)
    if source.local is not None:
        return source.local
    try:
        if offline():
            return cached_snapshot(source.name, source.revision, repo_type="model")
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(source.name, revision=source.revision, allow_patterns=REPO_FILES))
    except Exception as exc:  # noqa: BLE001 - offline misses, unknown repos, auth: all mean "no checkpoint here"
        where = "not in the local Hugging Face cache" if offline() else "cannot be downloaded"
        raise BadInputError(f"IQS model {ref} is {where} ({type(exc).__name__}: {exc}); "
                            + HOW_TO.format(name=source.name), field="iqs.model") from None


def revision(ref: str) -> str:
    """What the key holds of `ref`: the hub commit of the snapshot, or the content hash of a local folder."""
    from tasks.digest import files_sha256

    folder = snapshot(ref)
    if parse_uri(ref).local is None:
        return folder.name  # the hub cache names each snapshot after its commit
    return files_sha256(folder, list(checkpoint_files(folder, ref)))


def checkpoint_files(folder: Path, ref: str) -> tuple[Path, Path]:
    """(checkpoint, hparams.yaml) of a COMET model folder: one .ckpt under checkpoints/ (or model.ckpt)."""
    found = sorted((folder / "checkpoints").glob("*.ckpt"))
    named = [p for p in found if p.name == "model.ckpt"]
    hparams = folder / "hparams.yaml"
    if not hparams.is_file() or not (len(found) == 1 or named):
        raise BadInputError(f"{ref} is not a COMET checkpoint in {folder}: it needs hparams.yaml and one "
                            f"checkpoints/*.ckpt (found {[p.name for p in found]})", field="iqs.model")
    return (named or found)[0], hparams


def import_checkpoint(ctx: StageContext) -> StageOutput:
    """The iqs.train build of `iqs.model: hf:…`: the checkpoint checked against InstructionMetric, stored as a
    model artifact, and measured on the revision pairs when there are any (none are trained on)."""
    import torch
    import yaml

    from tasks.iqs.comet_model import CHECKPOINT, load_model, save_encoder_files
    from tasks.iqs.evaluate import comparison_rows, evaluate_pairs
    from tasks.iqs.metric import CLASS_IDENTIFIER
    from tasks.iqs.report import markdown_table
    from tasks.iqs.revisions import load_pairs
    from tasks.iqs.score import score_texts

    p = ctx.params
    folder = snapshot(p.model)
    ckpt, hparams_file = checkpoint_files(folder, p.model)
    hparams = yaml.safe_load(hparams_file.read_text()) or {}
    kind = hparams.get("class_identifier", CLASS_IDENTIFIER)
    if kind != CLASS_IDENTIFIER or "pretrained_model" not in hparams:
        raise BadInputError(f"{p.model} is a COMET {kind!r} model, not CaR's {CLASS_IDENTIFIER} (or its "
                            "hparams.yaml names no pretrained_model)", file=str(hparams_file), field="class_identifier")
    model_dir = ctx.scratch / "model"
    link = model_dir / CHECKPOINT
    link.parent.mkdir(parents=True, exist_ok=True)
    link.unlink(missing_ok=True)
    link.symlink_to(ckpt.resolve())  # published by copying its content; the scratch copy stays small
    (model_dir / "hparams.yaml").write_text(hparams_file.read_text())
    try:
        save_encoder_files(hparams["pretrained_model"], model_dir / "encoder")
    except OSError as exc:
        raise BadInputError(f"the config and tokenizer of {p.model}'s encoder {hparams['pretrained_model']!r} are "
                            f"not available ({exc}); " + HOW_TO.format(name=hparams["pretrained_model"]),
                            field="pretrained_model") from None
    model = load_model(model_dir)
    stored = torch.load(ckpt, map_location="cpu", weights_only=False, mmap=True)["state_dict"]
    missing = sorted(set(model.state_dict()) - set(stored))
    if missing:  # Lightning loads non-strictly: a checkpoint of another architecture would score at random
        raise BadInputError(f"{p.model}: the checkpoint lacks {len(missing)} weight(s) of the InstructionMetric its "
                            f"hparams.yaml describes, e.g. {missing[0]}", file=str(ckpt), field="state_dict")

    files = p.validation_revisions or p.revisions
    pairs, data = load_pairs(files, p.min_distance, p.filter_prepared_pairs) if files else ([], {})

    def score(texts: list[str]) -> Any:
        return score_texts(model, texts, normalize=p.normalize_whitespace, batch_size=p.batch_size).scores

    validation = evaluate_pairs(pairs, score, scorer_normalizes=p.normalize_whitespace) if pairs else \
        {"pairs": 0, "baselines": {}, "baselines_normalized": {}}
    source = {"model": p.model, "revision": revision(p.model), "checkpoint": ckpt.name}
    metrics = {"scorer": p.scorer, "validation": validation, "training": {"imported": source}, "data": data}
    info = {"scorer": p.scorer, "data_key": None, "normalize_whitespace": p.normalize_whitespace,
            "hyperparameters": p.model_dump(mode="json"), "imported": source}
    table = markdown_table(comparison_rows(validation, p.scorer), ["scorer", "raw", "normalized"]) if pairs else ""
    report = (f"## IQS model (comet), imported\n\n`{p.model}` at `{source['revision']}` "
              f"(`{ckpt.name}`, encoder `{hparams['pretrained_model']}`), {len(pairs)} validation pairs.\n\n{table}")
    stats = {"scorer": p.scorer, "imported": p.model, "revision": source["revision"], "valid_pairs": len(pairs),
             **{k: v for k, v in validation.items() if not isinstance(v, dict)}}
    return StageOutput(files={"model": model_dir, "model.json": json.dumps(info, indent=2),
                              "metrics.json": json.dumps(metrics, indent=2)}, stats=stats, report=report)
