"""The import of one step, as small units (see ARCHITECTURE.md, "Target layout"):

    plan.py       pure: spec + schema + headers -> a step plan (keys, mapping, options)
    chunks.py     a chunk of the input normalised, keyed and encoded (worker thread)
    answers.py    pure: status + body + batch -> outcome (msgspec-decoded)
    reconcile.py  reading records back by key: exactly-once creates, conflicts
    sender.py     one batch sent until every row is written or refused (bisecting)
    writer.py     the grouped journal writer (commit / defer / flush)
    gate.py       the key gate: rows sharing a key are sent in file order
    pipeline.py   the stages wired: producer, key gate, senders
    runner.py     `StepRunner`, `run_import`, `write_outputs`
"""
