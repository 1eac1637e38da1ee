"""RunMeasure: the base of the callbacks that measure a run for metrics.json."""

from typing import Any

import lightning as L


class RunMeasure(L.Callback):
    """A callback that measures the run. The attributes named in `COUNTERS` are saved in the checkpoint and
    restored with it, so that a resumed run keeps counting; `run_metrics()` gives metrics.json its numbers."""

    COUNTERS: tuple[str, ...] = ()

    def state_dict(self) -> dict[str, Any]:
        return {key: getattr(self, key) for key in self.COUNTERS}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.__dict__.update(state_dict)

    def run_metrics(self) -> dict[str, Any]:
        """What metrics.json gets of this measure at the end of the run."""
        raise NotImplementedError
