"""Many runs at once: Hydra multirun sweeps on existing engines (Hydra's launchers, SLURM through submitit).

* :mod:`~seres.launch.sweep_jobs`: each sweep job as a complete train.py run in a child process, skipped
  when done, resumed when interrupted (what ``train.py -m`` runs for each job).
* :mod:`~seres.launch.sweep`: a sweep directory read back, and the job chosen on validation
  (``python -m seres.launch.sweep chosen DIR``); loads no torch.
* :mod:`~seres.launch.sweep_summary`: the Hydra callback that writes the sweep's summary table.
* :mod:`~seres.launch.device_slots`: which devices (or CPU cores) each of the jobs side by side gets.

May import seres.run, seres.records and the experiment; nothing below imports it.
"""
