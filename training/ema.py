"""Exponential moving average of trained parameters (DefFiller's trainer and the mask DDPM's)."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterable, Iterator, Mapping, Optional

import torch


class EMA:
    """``ema <- d * ema + (1 - d) * param`` after every optimiser step, in float32.

    ``d`` is ``rate``; with ``warmup`` it is ``min(rate, (1 + step) / (10 + step))``, so that early
    averages forget a random initialisation quickly (for models trained from scratch).
    """

    def __init__(self, named_params: Iterable[tuple[str, torch.nn.Parameter]], rate: float,
                 warmup: bool = False) -> None:
        self.rate, self.warmup = float(rate), bool(warmup)
        self.params = dict(named_params)
        self.shadow = {n: p.detach().float().clone() for n, p in self.params.items()}

    def decay_at(self, step: Optional[int]) -> float:
        if not self.warmup or step is None:
            return self.rate
        return min(self.rate, (1 + step) / (10 + step))

    @torch.no_grad()
    def update(self, step: Optional[int] = None) -> None:
        """Average in the current parameters (``step``: the optimiser steps so far, for ``warmup``)."""
        names = list(self.params)
        shadow = [self.shadow[n] for n in names]
        current = [self.params[n].detach().float() for n in names]
        torch._foreach_lerp_(shadow, current, 1.0 - self.decay_at(step))

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

    def module_state_dict(self, module: torch.nn.Module) -> dict[str, torch.Tensor]:
        """``module.state_dict()`` with the averaged parameters in place of the trained ones."""
        state = {k: v.detach().clone() for k, v in module.state_dict().items()}
        state.update({n: v.clone() for n, v in self.shadow.items()})
        return state
