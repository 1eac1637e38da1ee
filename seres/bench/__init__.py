"""Training throughput, measured four ways in one process on one device and one network.

1. the project's Lightning loop: a real Trainer with ClassifierModule and the device pipeline
   (DeviceTrainLoader), gradient clipping as the project's trainer config sets it, no validation, checkpoint,
   logger or progress bar (lightning_loop.py);
2. a plain PyTorch loop over the same network, precision, memory layout, compile setting and loader: the
   reference that (1) is held to (plain_loop.py);
3. the seed's pipeline: a DataLoader over PIL images with torchvision's augmentations, fp32, the seed
   recipe's batch size (seed_loop.py);
4. the data pipeline alone: DeviceTrainLoader epochs with the seed augmentations, nothing trained (images.py).

    python -m seres.bench                        # a GPU: layer4, batch 1024, bf16, channels_last, compiled
    python -m seres.bench --quick --device cpu   # smoke sizes (tiny network, a few steps), as CI runs it
    python -m seres.bench --device cpu --cpu-full  # a CPU at real size: which setting trains fastest

--cpu-full (cpu_run.py) runs on a CPU, in place of the four sections: (A) the plain loop of (2) under each
precision, layout and compile setting, one table (cpu_grid.py); (B) the Lightning loop next to the plain loop
at the fastest of them; (C) the data path alone: the tensor pipeline of (4) in the main process against a
DataLoader with the project's per-image transforms and 0, 1 and 2 workers (cpu_data.py).

The recipes (optimizers, clipping, augmentations, normalisation, the seed's batch size, the epoch's size)
are composed from conf/ with Hydra (recipe.py); the sizes are the benchmark's own (settings.py). Images are
random uint8 of CIFAR shape unless --data-root points at CIFAR-10, so no dataset is needed. Only
steady-state steps are timed (timing.py); set-up, compilation and warm-up are reported apart (report.py).
docs/benchmarks.md says what every number means.
"""
