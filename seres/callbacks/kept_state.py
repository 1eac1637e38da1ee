"""KeptState: what a measuring callback keeps in the checkpoint, so that a resumed run keeps counting."""

from typing import Any


class KeptState:
    """Mixed into a Lightning callback: the attributes named in `KEPT` are saved and restored with it."""

    KEPT: tuple[str, ...] = ()

    def state_dict(self) -> dict[str, Any]:
        return {key: getattr(self, key) for key in self.KEPT}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.__dict__.update(state_dict)
