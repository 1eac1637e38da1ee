"""The files a run writes and what is made of them, for every other layer to use.

* :mod:`~seres.records.atomic`: atomic writes (checkpoints, JSON, any file), and the full-disk message.
* :mod:`~seres.records.report`: the run's epochs.csv, metrics.json and confusion matrix read back, its
  figures (curves, confusion, mistakes) and report.md (``python -m seres.records.report RUN_DIR``).

Imports nothing else of seres.
"""
