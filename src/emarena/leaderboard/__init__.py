"""The leaderboard: what the Gradio app shows, split by concern.

    about.py         texts: the protocol, regimes, metric definitions (from the metrics
                     registry), pooling and pairing, how to reproduce a row, citations
    read_results.py  every result file -> valid cells, invalid files (with their error),
                     duplicates; one pooled row per (defense, model, EM dataset, regime), its
                     paired differences to the EM-only control and SGTR, its cost
    views.py         which rows: the defense view (one row per defense, regimes side by side,
                     reference rows), the regime view; filters, search, sort, ranks
    display.py       columns, "0.21 ± 0.04" numbers and their tooltips, the HTML table, the
                     exports (CSV, JSON lines, Parquet), the drill-down's tables
    plots.py         matplotlib figures: prevention vs reversal, misalignment vs capability
    submit.py        validate pasted YAML, queue it (per-account limit); the Queue tab
    space.py         the Hugging Face Space folder (`emarena space build | push`)
    synthetic.py     synthetic result files (tests, the first-page benchmark, `app.py --demo`)
    app.py           the page and its events (the only module that imports gradio)

Nothing here imports torch or vLLM.
"""
