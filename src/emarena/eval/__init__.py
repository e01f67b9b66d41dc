"""Evaluation: every cell is evaluated identically.

    rows.py       the JSONL row types (Generation, Judgement, ChoiceScore) and the append-only,
                  keyed-by-id row store that makes generation and judging resumable row by row
    sets.py       eval.yaml: which question sets, conditions and probes the suite evaluates
    backends/     generation backends (transformers, vllm), registered lazily
    choice.py     answer-token probability scoring (self-recognition, TruthfulQA A/B)
    judges/       judges (openai-compatible HTTP, local hf), score aggregation, the judgement cache
    metrics/      registered metrics with bootstrap CIs
    result.py     result.json schema v1, documented key by key
    report.py     report.md and plots for a run
"""
