"""The two-stage protocol: cells, content-addressed stages, run folders, and `score`.

cell.py    what one unit of work is (suite, model, EM dataset, regime, defense, seed, preset)
stages.py  which training stages a cell needs, their content-addressed keys, and running one
           resumably (temp folder -> rename -> DONE.json last)
run.py     a run folder: plan.json, cells/, stages/, events.jsonl, and its status
score.py   `emarena score`: plan the cells, train what is missing
"""
