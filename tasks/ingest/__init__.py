"""Ingest: xlsx sheets, JSON/JSONL/CSV/parquet files (gzip too) and Hugging Face datasets into the canonical
conversation table, with a quarantine for unusable rows and exports to the common SFT formats.

Modules: readers (files), xlsx, hf (datasets), formats (record parsers + detection), oasst (message trees),
columnar (plain rows of the flat formats a chunk at a time), parse (rows → records), columns (records → Arrow
column by column), arrow (arrays from buffers), dedupe, source (one source → tables + counts), revision (content
fingerprints), quarantine, exports, report (the counts). The stages are tasks/stages/ingest_source.py and ingest.py.
"""
from tasks.ingest.exports import EXPORT_FORMATS, parse_spec, write_export
from tasks.ingest.formats import FORMATS, MEDICATIONQA_SYSTEM, detect_format
from tasks.ingest.quarantine import QUARANTINE_SCHEMA
from tasks.ingest.source import read_source

__all__ = ["EXPORT_FORMATS", "FORMATS", "MEDICATIONQA_SYSTEM", "QUARANTINE_SCHEMA",
           "detect_format", "parse_spec", "read_source", "write_export"]
