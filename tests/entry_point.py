"""`python train.py ARGUMENTS...` run in the test's own process: Hydra's real command line, composition and
callbacks, without the seconds a new Python process spends importing torch and Lightning."""

import sys

from hydra.core.global_hydra import GlobalHydra

import train


def run_entry_point(arguments: list[str], monkeypatch) -> int:
    """Run train.py's entry point with `arguments`; returns its exit code."""
    monkeypatch.setattr(sys, "argv", [train.__file__, *arguments])
    try:
        train.main()
    except SystemExit as stop:
        return stop.code
    finally:
        GlobalHydra.instance().clear()
    return 0
