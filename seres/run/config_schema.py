"""The types of every setting, as Hydra structured configs: a value of the wrong type is refused where the
config is composed (train.py, eval.py, a multirun, the compose API), naming the key.

train.yaml and eval.yaml take their schema as their base (`defaults: [/train_schema@_here_, ...]`), which
types every group below them; the scheduler options, whose keys differ, each take their own. YAML and
command-line values are converted or refused by OmegaConf: `model.layer4=no` becomes false, `tta=maybe` and
`model.widths=[32,abc]` are refused. A schema lists its group's keys, so a misspelt key is refused too.
Allowed values beyond the type (ranges, choices such as data.pipeline, rules between keys) are checked in one
place, seres/run/config_checks.py, before a run starts; constructors still check their own arguments for
callers from Python. Trainer, callbacks and loggers stay open mappings: their keys are Lightning's and the
classes'.
"""

from dataclasses import MISSING as NO_FIELD_DEFAULT
from dataclasses import dataclass, field, fields, is_dataclass, make_dataclass
from typing import Any, get_type_hints

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from seres.data.augmentation import Augmentation


@dataclass
class ModelSchema:
    _target_: str = "seres.model.SEResNet"
    layer4: bool = False
    widths: list[int] = field(default_factory=lambda: [32, 64, 128, 256])
    blocks: list[int] = field(default_factory=lambda: [3, 3, 3, 3])
    strides: list[int] = field(default_factory=lambda: [1, 2, 2, 2])
    stem_width: int = 32
    se_reduction: int = 16
    dropout: float = 0.0
    num_classes: int = 10
    zero_init_residual: bool = False
    bn_momentum: float = 0.1
    bn_scale_trainable: bool = True
    channels_last: bool = True
    compile: Any = "auto"  # auto, true or false (config_checks)


# data.aug's keys are Augmentation's fields, typed as there (a mutable copy: a frozen dataclass would make
# the config node read-only).
_AUGMENTATION_TYPES = get_type_hints(Augmentation)
AugmentationSchema = make_dataclass(
    "AugmentationSchema",
    [(f.name, _AUGMENTATION_TYPES[f.name], field(default=f.default)) for f in fields(Augmentation)],
)


@dataclass
class DataSchema:
    _target_: str = "seres.data.CIFAR10DataModule"
    aug: AugmentationSchema = field(default_factory=AugmentationSchema)
    root: str = MISSING
    batch_size: int = 128
    eval_batch_size: int = 512
    num_workers: int = 2
    val_size: int = 5000
    split_seed: int = 0
    overfit_batches: int = 0
    mean: list[float] = field(default_factory=lambda: [0.4914, 0.4822, 0.4465])
    std: list[float] = field(default_factory=lambda: [0.2470, 0.2435, 0.2616])
    verify: bool = True
    pipeline: str = "device"
    seed: int = MISSING
    channels_last: bool = MISSING


@dataclass
class OptimizerSchema:
    _target_: str = "torch.optim.SGD"
    _partial_: bool = True
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5.0e-4


@dataclass
class CosineScheduleSchema:
    _target_: str = "seres.module.cosine_schedule"
    _partial_: bool = True
    warmup_epochs: float = 0.0
    min_lr_ratio: float = 0.0


@dataclass
class TriangularScheduleSchema:
    _target_: str = "seres.module.triangular_schedule"
    _partial_: bool = True
    warmup_epochs: float = 0.0
    start_ratio: float = 0.0
    end_ratio: float = 0.0


@dataclass
class StepScheduleSchema:
    _target_: str = "seres.module.step_schedule"
    _partial_: bool = True
    milestones: list[float] = field(default_factory=lambda: [0.5, 0.75])
    gamma: float = 0.1


@dataclass
class ParamGroupsSchema:
    decay_norm_and_bias: bool = True
    norm_bias_lr_scale: float = 1.0


@dataclass
class MixSchema:
    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0
    prob: float = 1.0


@dataclass
class DDPSchema:
    batch: str = "per_device"  # per_device or global (config_checks)


@dataclass
class TrainSchema:
    """train.py's top level; the groups' own schemas type their contents."""

    model: ModelSchema = MISSING
    data: DataSchema = MISSING
    optimizer: OptimizerSchema = MISSING
    scheduler: Any = None
    trainer: dict[str, Any] = MISSING
    callbacks: dict[str, Any] = field(default_factory=dict)
    logger: Any = None
    paths: dict[str, Any] = MISSING
    task_name: str = "train"
    tags: list[str] = field(default_factory=list)
    seed: int = 42
    label_smoothing: float = 0.0
    param_groups: ParamGroupsSchema = field(default_factory=ParamGroupsSchema)
    mix: MixSchema = field(default_factory=MixSchema)
    sam_rho: float = 0.0
    tta: bool = False
    tta_translate: int = 0
    test: bool = True
    progress: bool = True
    tune: str | None = None  # null, lr or batch_size (config_checks)
    resume: bool = False
    continue_from: str | None = None
    ddp: DDPSchema = field(default_factory=DDPSchema)


@dataclass
class EvalSchema:
    """eval.py's settings (conf/eval.yaml)."""

    ckpt_path: str = MISSING
    split: str = "test"  # test or val (eval.py)
    tta: bool = False
    tta_translate: int = 0
    output_dir: str | None = None
    data_root: str | None = None
    batch_size: int = 512
    num_workers: int = 2
    accelerator: str = "auto"
    precision: str | None = None
    cifar10_1: str | None = None
    cifar10_c: str | None = None
    limit_batches: int | None = None
    progress: bool = True


SCHEMAS = {
    "train": TrainSchema,
    "eval": EvalSchema,
    "scheduler_cosine": CosineScheduleSchema,
    "scheduler_triangular": TriangularScheduleSchema,
    "scheduler_step": StepScheduleSchema,
}


# What schema_default returns for a key the schema gives no default: one inside an open mapping (trainer,
# callbacks, scheduler, paths), or a required one.
NO_DEFAULT = object()


def schema_default(key: str, schema: type = TrainSchema) -> Any:
    """The default the schema gives a dotted key ("model.bn_momentum" -> 0.1), or NO_DEFAULT."""
    *groups, name = key.split(".")
    for group in groups:
        schema = get_type_hints(schema).get(group)
        if not is_dataclass(schema):
            return NO_DEFAULT
    spec = next((f for f in fields(schema) if f.name == name), None)
    if spec is None:
        return NO_DEFAULT
    if spec.default is not NO_FIELD_DEFAULT:
        return NO_DEFAULT if spec.default == MISSING else spec.default
    return spec.default_factory() if spec.default_factory is not NO_FIELD_DEFAULT else NO_DEFAULT


def register_schemas() -> None:
    """Put every schema in Hydra's ConfigStore as <name>_schema, where the YAML files' defaults find them.

    Outside any config group, so that `--help` lists only the groups a user chooses from.
    """
    store = ConfigStore.instance()
    for name, schema in SCHEMAS.items():
        store.store(name=f"{name}_schema", node=schema)


register_schemas()
