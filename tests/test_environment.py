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


def installed(name: str) -> str | None:
    """The version Python imports: the first on sys.path. Other copies can come later on the path (setuptools
    appends its vendored packages once imported), so the list of every distribution is not the answer."""
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def test_every_locked_package_is_installed_at_its_locked_version():
    locked = locked_versions()
    assert {"torch", "lightning", "hydra-core", "torchmetrics", "tensorboard"} <= locked.keys()
    found = {name: installed(name) for name in locked}
    differ = {name: (version, found[name]) for name, version in locked.items() if found[name] != version}
    assert not differ, f"(locked, installed) differ: {differ}; `make install` installs the locked versions"
