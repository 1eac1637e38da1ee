"""The composed config as a tree, written once to the run's log when it starts."""

import io
from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.text import Text
from rich.tree import Tree

WIDTH = 110  # train.log's lines, whatever the terminal


class _ListsOnOneLine(yaml.SafeDumper):
    """Block-style mappings, flow-style lists: `widths: [32, 64, 128, 256]` rather than four lines."""


_ListsOnOneLine.add_representer(
    list, lambda dumper, items: dumper.represent_sequence("tag:yaml.org,2002:seq", items, flow_style=True)
)


def as_yaml(settings: dict[str, Any]) -> Text:
    """YAML in the config's own key order, as plain text (a `[...]` is a list, not Rich markup)."""
    dumped = yaml.dump(settings, Dumper=_ListsOnOneLine, sort_keys=False, width=WIDTH)
    return Text(dumped.rstrip())


def config_tree(cfg: DictConfig) -> str:
    """The run's own settings (seed, tags...) first, then a branch per group (model, data, trainer...), all
    resolved, as plain text."""
    settings = OmegaConf.to_container(cfg, resolve=True)
    groups = {key: value for key, value in settings.items() if isinstance(value, dict)}
    tree = Tree("config")
    tree.add(as_yaml({k: v for k, v in settings.items() if k not in groups}))
    for key, value in groups.items():
        tree.add(key).add(as_yaml(value))
    text = io.StringIO()
    Console(file=text, width=WIDTH, color_system=None, highlight=False).print(tree)
    return text.getvalue().rstrip()
