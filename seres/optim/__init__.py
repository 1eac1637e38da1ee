"""Optimizers around torch's: :class:`~seres.optim.sam.SAM` (sharpness-aware minimisation).

Part of the experiment's core: imports torch only, nothing of seres.
"""
