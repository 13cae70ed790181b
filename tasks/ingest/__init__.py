"""Ingest: xlsx sheets, JSON/JSONL/CSV/parquet files (gzip too) and Hugging Face datasets into the canonical
conversation table, with a quarantine for unusable rows (exports to the common SFT formats: tasks/exports.py).

Modules: readers (files), xlsx, hf (datasets), formats (record parsers + detection), turns (validation and the
repair policy), tools (tool-call spellings), oasst (message trees), columnar (plain rows of the flat formats a
chunk at a time), parse (rows → records), columns (records → Arrow column by column), arrow (arrays from
buffers), dedupe, source (one source → tables + counts), hints (warnings), revision (content fingerprints),
quarantine, report (the counts). The stages are tasks/stages/ingest_source.py and ingest.py.
"""
from tasks.ingest.formats import FORMATS, MEDICATIONQA_SYSTEM, detect_format
from tasks.ingest.quarantine import QUARANTINE_SCHEMA
from tasks.ingest.source import read_source

__all__ = ["FORMATS", "MEDICATIONQA_SYSTEM", "QUARANTINE_SCHEMA", "detect_format", "read_source"]
