"""EMA: an exponential moving average of the weights, used for validation, checkpoints and testing."""

from lightning.pytorch.callbacks import WeightAveraging
from torch.optim.swa_utils import get_ema_multi_avg_fn


class EMA(WeightAveraging):
    """Exponential moving average of the weights: Lightning's WeightAveraging with torch's foreach update.

    Validation, checkpoints (their `state_dict`), best_model.pth and the final test use the averaged weights,
    as with Lightning's EMAWeightAveraging. Each update is one foreach call (`torch._foreach_lerp_`) per
    device and floating-point dtype instead of one call per tensor (integer buffers such as BatchNorm's
    num_batches_tracked are still updated one by one). torch's AveragedModel reads its update counter on the
    host twice per update, so each update waits for the device; `every_n_steps` > 1 makes those waits rarer.
    """

    def __init__(self, decay: float = 0.999, every_n_steps: int = 1, use_buffers: bool = True) -> None:
        if not 0.0 < decay < 1.0 or every_n_steps < 1:
            raise ValueError(
                f"{type(self).__name__}(decay={decay}, every_n_steps={every_n_steps}): decay must be in "
                "(0, 1) and every_n_steps >= 1, e.g. decay=0.999 every_n_steps=1"
            )
        # Not Lightning's EMAWeightAveraging: its avg_fn updates the averaged model tensor by tensor.
        super().__init__(use_buffers=use_buffers, multi_avg_fn=get_ema_multi_avg_fn(decay))
        self.every_n_steps = every_n_steps

    def should_update(self, step_idx: int | None = None, epoch_idx: int | None = None) -> bool:
        return step_idx is not None and step_idx % self.every_n_steps == 0
