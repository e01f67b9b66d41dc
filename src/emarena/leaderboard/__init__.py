"""The leaderboard: what `leaderboard/app.py` (the Gradio Space) shows, split by concern.

    about.py         texts: the protocol, regimes, metric definitions (from the metrics
                     registry), how to reproduce a row, citations
    read_results.py  every result file -> valid cells, invalid files (with their error),
                     duplicates; one aggregated row per (defense, model, EM dataset, regime)
    display.py       the table's columns, "0.12 [0.08, 0.17] n=64 (3 unscored)" formatting,
                     filters, search, sort, CSV
    plots.py         matplotlib figures: misalignment vs capability, per-defense bars
    submit.py        validate pasted YAML, queue it; read the requests folder for the Queue tab
    synthetic.py     synthetic result files (tests, the first-page benchmark, `app.py --demo`)

Nothing here imports torch or vLLM; gradio is imported only by `leaderboard/app.py`.
"""
