"""Sharpness-aware minimisation (Foret et al., 2021) around any torch optimizer.

Each step takes two forward-backward passes of the same batch through the step's closure (Lightning's
training step, backward and gradient clipping): the first at the weights w gives the gradient g; the second
at w + rho g / ||g|| gives the gradient the wrapped optimizer then applies at w. The second pass must leave
no trace but its gradient, so the buffers given (BatchNorm's running statistics) are put back after it, and
`second_pass` tells the training step to reuse the first pass's batch and to count no metrics.
"""

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch import Tensor
from torch.optim import Optimizer

OptimizerFactory = Callable[[Iterable[Any]], Optimizer]


class SAM(Optimizer):
    """`base` (a factory such as `partial(torch.optim.SGD, lr=0.1)`) built on `params`, stepped at the
    gradient of the point `rho` away along the normalised gradient. The parameter groups, and so the
    learning rates a scheduler sets, are the base optimizer's own."""

    def __init__(
        self, params: Iterable[Any], base: OptimizerFactory, rho: float, buffers: Sequence[Tensor] = ()
    ) -> None:
        if rho <= 0:
            raise ValueError(f"SAM's rho must be > 0, got {rho}")
        self.base_optimizer = base(params)
        super().__init__(self.base_optimizer.param_groups, {"rho": rho})
        self.param_groups = self.base_optimizer.param_groups  # one list: schedulers reach the base
        self.rho = rho
        self.kept_buffers = list(buffers)
        self.second_pass = False

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:  # type: ignore[override]
        if closure is None:
            raise RuntimeError(
                "SAM needs the step's closure for its second pass, and fp16 loss scaling "
                "(trainer.precision=16-mixed) steps without one: use trainer.precision=bf16-mixed or 32-true"
            )
        with torch.enable_grad():
            loss = closure()
        offsets = self._climb()
        kept = [buffer.clone() for buffer in self.kept_buffers]
        self.second_pass = True
        try:
            with torch.enable_grad():
                closure()
        finally:
            self.second_pass = False
            for buffer, value in zip(self.kept_buffers, kept, strict=True):
                buffer.copy_(value)
            for parameter, offset in offsets:
                parameter.sub_(offset)
        self.base_optimizer.step()
        return loss

    def _climb(self) -> list[tuple[Tensor, Tensor]]:
        """Move every parameter with a gradient by rho g / ||g|| (g: all gradients as one vector)."""
        with_grad = [p for group in self.param_groups for p in group["params"] if p.grad is not None]
        if not with_grad:
            return []
        norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad) for p in with_grad]))
        scale = self.rho / (norm + 1e-12)
        offsets = [(p, p.grad * scale.to(p.grad.dtype)) for p in with_grad]
        for parameter, offset in offsets:
            parameter.add_(offset)
        return offsets

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.base_optimizer.zero_grad(set_to_none)

    def state_dict(self) -> dict[str, Any]:
        # The base optimizer's state (momentum) is all there is to keep; the climb lasts one step.
        return self.base_optimizer.state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.base_optimizer.load_state_dict(state_dict)
        self.param_groups = self.base_optimizer.param_groups
