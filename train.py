"""Train an SE-ResNet on CIFAR-10, test the best checkpoint, and leave everything in the run directory.

    python train.py                                   # the default config (conf/train.yaml)
    python train.py model.layer4=true trainer.devices=2
    python train.py -m trainer.max_epochs=10,20 optimizer.lr=0.05,0.1
    python train.py experiment=seed_paper

The run directory (Hydra's output dir) receives best.ckpt, last.ckpt, best_model.pth (the network's plain
state_dict), metrics.json, TensorBoard event files and the composed config (.hydra/).
"""

from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from seres.run.run_names import register_resolvers

register_resolvers()  # the default run directory's name (conf/hydra/default.yaml), trackers' run names

# An absolute path, so that the configs are found however train.py is started or imported.
CONF_DIR = Path(__file__).resolve().parent / "conf"


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="train")
def main(cfg: DictConfig) -> float | None:
    # The run's modules are loaded here, once a run's config is composed: `--help`, `--cfg` and tab
    # completion need no torch or Lightning, which take seconds to load.
    script = Path(__file__).resolve()
    if HydraConfig.get().mode == RunMode.MULTIRUN:
        from seres.launch.sweep_jobs import run_sweep_job  # each job a child process running this script

        return run_sweep_job(cfg, script)
    from seres.run.training import run

    return run(cfg)


if __name__ == "__main__":
    main()
