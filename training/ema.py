"""Exponential moving average of the trained parameters (the frozen ones never change)."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterable, Iterator, Mapping

import torch


class EMA:
    """``ema <- rate * ema + (1 - rate) * param`` after every optimiser step, in float32."""

    def __init__(self, named_params: Iterable[tuple[str, torch.nn.Parameter]], rate: float) -> None:
        self.rate = float(rate)
        self.params = dict(named_params)
        self.shadow = {n: p.detach().float().clone() for n, p in self.params.items()}

    @torch.no_grad()
    def update(self) -> None:
        names = list(self.params)
        shadow = [self.shadow[n] for n in names]
        current = [self.params[n].detach().float() for n in names]
        torch._foreach_lerp_(shadow, current, 1.0 - self.rate)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return dict(self.shadow)

    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        missing = sorted(set(self.shadow) - set(state))
        if missing:
            raise KeyError(f"EMA state lacks {len(missing)} parameter(s), e.g. {missing[0]}")
        for name, value in self.shadow.items():
            value.copy_(state[name])

    @contextmanager
    def applied(self) -> Iterator[None]:
        """The averaged weights in the model for the duration (sample grids); the trained ones after."""
        backup = {n: p.detach().clone() for n, p in self.params.items()}
        with torch.no_grad():
            for n, p in self.params.items():
                p.copy_(self.shadow[n].to(p.dtype))
        try:
            yield
        finally:
            with torch.no_grad():
                for n, p in self.params.items():
                    p.copy_(backup[n])
