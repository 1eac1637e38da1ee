"""`python -m seres.bench`: see seres/bench/__init__.py."""

from seres.bench.cli import main

main()
