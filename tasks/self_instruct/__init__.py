"""Self-instruct (Alpaca): new instruction data generated from seed tasks, as a source for the pipeline.

prompt (seed tasks → Alpaca's numbered prompt) → backends (OpenAI-compatible HTTP, local transformers) →
parse (numbered text → tasks, Alpaca's filters) → rouge (ROUGE-L de-duplication) → generate (the loop, budgets)
→ records (canonical rows with lineage), plots (outcomes.png); the stage is tasks/stages/self_instruct.py.
"""
