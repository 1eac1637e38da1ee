"""The environment `make install` builds: the versions in requirements.lock (which `make lock` writes)."""

import re
from importlib import metadata
from pathlib import Path

LOCK = Path(__file__).resolve().parents[1] / "requirements.lock"


def canonical(name: str) -> str:
    """A distribution's name as pip compares them (PEP 503): PyYAML, pyyaml and py_yaml are one package."""
    return re.sub(r"[-_.]+", "-", name).lower()


def locked_versions() -> dict[str, str]:
    lines = [line.strip() for line in LOCK.read_text().splitlines()]
    pins = [line.split("==") for line in lines if line and not line.startswith("#")]
    return {canonical(name): version for name, version in pins}


def test_every_locked_package_is_installed_at_its_locked_version():
    locked = locked_versions()
    assert {"torch", "lightning", "hydra-core", "torchmetrics", "tensorboard"} <= locked.keys()
    installed = {canonical(d.metadata["Name"]): d.version for d in metadata.distributions()}
    differ = {
        name: (version, installed.get(name))
        for name, version in locked.items()
        if installed.get(name) != version
    }
    assert not differ, f"(locked, installed) differ: {differ}; `make install` installs the locked versions"
