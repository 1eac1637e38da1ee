"""Many runs at once: Hydra multirun sweeps on existing engines (Hydra's launchers, SLURM through submitit).

* :mod:`~seres.launch.sweep`: each sweep job as a complete train.py run in a child process, skipped when
  done, resumed when interrupted; the sweep's chosen settings (``python -m seres.launch.sweep chosen DIR``).
* :mod:`~seres.launch.sweep_summary`: the Hydra callback that writes the sweep's summary table.
* :mod:`~seres.launch.device_slots`: which devices (or CPU cores) each of the jobs side by side gets.

May import seres.run, seres.records and the experiment; nothing below imports it.
"""
