"""A run's life, from the command line to its last file: everything train.py and eval.py need beyond the
experiment itself.

* :mod:`~seres.run.training`: what train.py runs once Hydra has composed a run's config: build, fit, test,
  write the run's files (or a ``tune=`` search).
* :mod:`~seres.run.config_schema`: the typed schema of every setting, checked by Hydra at composition.
* :mod:`~seres.run.config_checks`: range and cross-key rules, and what this machine can run.
* :mod:`~seres.run.auto_settings`: what ``trainer.precision=auto`` and ``model.compile=auto`` become here;
  :mod:`~seres.run.cpu_features` says what the CPU can do.
* :mod:`~seres.run.start_checks`: the Hydra callback that refuses a run that cannot start, before any file.
* :mod:`~seres.run.resume`, :mod:`~seres.run.interrupts`, :mod:`~seres.run.checkpoints`: continuing a run
  only under its own settings, stopping cleanly on a signal, reading checkpoints safely.
* :mod:`~seres.run.run_names`: the run directory's and the trackers' names, and every Hydra resolver (no
  torch: registered before composition).
* :mod:`~seres.run.trackers`: MLflow and W&B beside TensorBoard; :mod:`~seres.run.slurm`: a run's tasks
  under SLURM.

May import the experiment (seres.model, seres.module, seres.data, seres.callbacks) and seres.records; the
experiment imports nothing of this package.
"""
