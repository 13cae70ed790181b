"""Training a peft adapter (LoRA, QLoRA, prefix tuning, P-tuning v2) on tokenized rows.

Modules: data (rows, checks, truncation, the eval split), model (loading, wrapping, devices), loop (the
Trainer, checkpoints, resume), outputs (loss curve, model card, lineage, merge). The stage is
tasks/stages/train.py.
"""
