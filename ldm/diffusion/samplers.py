"""Deterministic diffusion samplers as small pure functions.

Every sampler takes ``model_fn(x, t)`` (``t`` a LongTensor with one timestep per sample), the
starting noise and the ``alphas_cumprod`` buffer, and returns the final sample. ``prediction`` says
what the model returns: ``"eps"`` (the noise, the original) or ``"v"`` (``sqrt(a) eps - sqrt(1-a) x0``,
Salimans & Ho 2022); a v-model can start where ``alphas_cumprod`` is 0 (a zero-terminal-SNR
schedule), an eps-model cannot. ``spacing`` picks the timesteps: ``"leading"`` is the original grid
(its first timestep is 981 for 50 steps), ``"trailing"`` starts at the last timestep (Lin et al. 2024).
``hook(i, x, t)``, when given, runs before each step's model evaluation and may return a modified ``x`` (used for
latent blending in implant mode and for scheduled gate strengths). DDIM and PLMS reproduce the
original GLIGEN samplers step by step; DPM-Solver++(2M) follows Lu et al. (2022) and UniPC Zhao et al.
(2023).
"""
from __future__ import annotations

import math
from typing import Callable, Optional, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

ModelFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
EpsFn = ModelFn  # a model_fn of an eps-prediction model
Hook = Callable[[int, torch.Tensor, int], torch.Tensor]
PREDICTIONS = ("eps", "v")
SPACINGS = ("leading", "trailing")


def split_prediction(out: torch.Tensor, x: torch.Tensor, alpha, sigma, prediction: str = "eps"):
    """(eps, x0) from a model output at ``x``, with ``alpha = sqrt(a)`` and ``sigma = sqrt(1 - a)``."""
    if prediction == "eps":
        return out, (x - sigma * out) / alpha
    if prediction == "v":
        return alpha * out + sigma * x, alpha * x - sigma * out
    raise ValueError(f"prediction must be one of {', '.join(PREDICTIONS)}, got {prediction!r}")


def _check_start(alphas_cumprod: torch.Tensor, t_first: int, prediction: str) -> None:
    if prediction not in PREDICTIONS:
        raise ValueError(f"prediction must be one of {', '.join(PREDICTIONS)}, got {prediction!r}")
    if prediction == "eps" and float(alphas_cumprod[int(t_first)]) <= 0.0:
        raise ValueError(f"an eps-prediction model cannot start at timestep {int(t_first)}, where alphas_cumprod "
                         "is 0 (zero terminal SNR): use a v-prediction model or leading spacing")


def uniform_timesteps(num_steps: int, num_train_steps: int = 1000) -> np.ndarray:
    """The original "uniform" DDIM discretisation: ``range(0, T, T // S) + 1``.

    As in the original, ``T`` not divisible by ``S`` yields ``len(range(0, T, T // S))`` steps. The
    original shifts by one "to get the final alpha right", which overflows when ``S == T``; in that
    case only we use ``0 … T-1``.
    """
    if num_steps < 1 or num_steps > num_train_steps:
        raise ValueError(f"steps must be in 1..{num_train_steps}, got {num_steps}")
    steps = np.arange(0, num_train_steps, num_train_steps // num_steps)
    return steps + 1 if steps[-1] + 1 < num_train_steps else steps


def trailing_timesteps(num_steps: int, num_train_steps: int = 1000) -> np.ndarray:
    """Ascending timesteps whose last is ``T - 1``, spaced ``T / S`` apart (Lin et al. 2024, "trailing")."""
    if num_steps < 1 or num_steps > num_train_steps:
        raise ValueError(f"steps must be in 1..{num_train_steps}, got {num_steps}")
    steps = np.round(np.arange(num_train_steps, 0, -num_train_steps / num_steps)).astype(np.int64) - 1
    return steps[::-1].copy()


def sampling_timesteps(num_steps: int, num_train_steps: int = 1000, spacing: str = "leading") -> np.ndarray:
    """The ascending timesteps DDIM and PLMS evaluate: :func:`uniform_timesteps` or :func:`trailing_timesteps`."""
    if spacing == "leading":
        return uniform_timesteps(num_steps, num_train_steps)
    if spacing == "trailing":
        return trailing_timesteps(num_steps, num_train_steps)
    raise ValueError(f"spacing must be one of {', '.join(SPACINGS)}, got {spacing!r}")


def ddim_coefficients(alphas_cumprod: torch.Tensor, timesteps: np.ndarray, eta: float = 0.0):
    """(alpha_t, alpha_prev, sigma_t) per DDIM step, float32 like the original."""
    ac = alphas_cumprod.detach().float().cpu()
    idx = torch.as_tensor(timesteps, dtype=torch.long)
    a = ac[idx]
    a_prev = torch.cat([ac[:1], ac[idx[:-1]]])
    sigma = eta * torch.sqrt((1 - a_prev) / (1 - a) * (1 - a / a_prev))
    return a, a_prev, sigma


def _split(out, x, a, prediction):
    a = a.to(device=x.device, dtype=x.dtype)
    return split_prediction(out, x, torch.sqrt(a), torch.sqrt(1 - a), prediction)


def _ddim_update(x, eps, pred_x0, a_prev, sigma, noise=None):
    a_prev, sigma = (v.to(device=x.device, dtype=x.dtype) for v in (a_prev, sigma))
    x_prev = torch.sqrt(a_prev) * pred_x0 + torch.sqrt(1.0 - a_prev - sigma ** 2) * eps
    if noise is not None:
        x_prev = x_prev + sigma * noise
    return x_prev


def _tvec(x: torch.Tensor, t: int) -> torch.Tensor:
    return torch.full((x.shape[0],), int(t), device=x.device, dtype=torch.long)


def _steps(n: int, progress: bool, desc: str, start: int = 0):
    if not 0 <= start < n:
        raise ValueError(f"start_step must be in 0..{n - 1}, got {start}")
    return tqdm(range(start, n), desc=desc, leave=False) if progress else range(start, n)


@torch.no_grad()
def sample_ddim(model_fn: ModelFn, x: torch.Tensor, alphas_cumprod: torch.Tensor, steps: int,
                eta: float = 0.0, generator: Optional[torch.Generator] = None,
                hook: Optional[Hook] = None, progress: bool = False, start_step: int = 0,
                prediction: str = "eps", spacing: str = "leading") -> torch.Tensor:
    """DDIM (Song et al. 2021); ``eta=0`` is the deterministic ODE solver."""
    ts = sampling_timesteps(steps, alphas_cumprod.shape[0], spacing)
    a, a_prev, sigma = ddim_coefficients(alphas_cumprod, ts, eta)
    n = len(ts)
    _check_start(alphas_cumprod, ts[n - 1 - start_step] if 0 <= start_step < n else ts[-1], prediction)
    for i in _steps(n, progress, "DDIM", start_step):
        k = n - 1 - i
        if hook is not None:
            x = hook(i, x, int(ts[k]))
        eps, x0 = _split(model_fn(x, _tvec(x, ts[k])), x, a[k], prediction)
        noise = None
        if eta > 0:
            noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        x = _ddim_update(x, eps, x0, a_prev[k], sigma[k], noise)
    return x


@torch.no_grad()
def sample_ddim_dense(eps_fn: EpsFn, x: torch.Tensor, alphas_cumprod: torch.Tensor, t_start: int,
                      progress: bool = False, stride: int = 1) -> torch.Tensor:
    """Deterministic DDIM through every ``stride``-th integer timestep from ``t_start`` down to 0.

    The fine reference solution of the ODE that a coarse sampler starting at ``t_start`` solves
    (:func:`start_timestep`): a coarse sampler must be compared with the dense solve from *its own*
    start. (The samplers' uniform grids start at 951 for 20 steps, 981 for 50 and 999 for 1000, so a
    1000-step DDIM run from 999 is a different initial-value problem for the same noise.)
    """
    if not 1 <= t_start < alphas_cumprod.shape[0]:
        raise ValueError(f"t_start must be in 1..{alphas_cumprod.shape[0] - 1}, got {t_start}")
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    ac = alphas_cumprod.detach().float().cpu()
    zero = torch.zeros(())
    grid = range(t_start, 0, -stride)
    for t in (tqdm(grid, desc="DDIM dense", leave=False) if progress else grid):
        eps, x0 = _split(eps_fn(x, _tvec(x, t)), x, ac[t], "eps")
        x = _ddim_update(x, eps, x0, ac[max(t - stride, 0)], zero)
    return x


@torch.no_grad()
def sample_reference(eps_fn: EpsFn, x: torch.Tensor, alphas_cumprod: torch.Tensor, t_start: int,
                     progress: bool = False) -> torch.Tensor:
    """Third-order UniPC through every integer timestep from ``t_start`` down to 0: the most
    accurate solve of the ODE that a model defined at integer timesteps allows.

    Use this, not :func:`sample_ddim_dense`, to measure a sampler's ODE error: dense DDIM is first
    order and its last steps are long in log-SNR, so its own error is of the size of the errors being
    measured, and it shares that error with DDIM and PLMS, whose last step is the same DDIM step
    (figures in ``benchmarks/README.md``).
    """
    if not 1 <= t_start < alphas_cumprod.shape[0]:
        raise ValueError(f"t_start must be in 1..{alphas_cumprod.shape[0] - 1}, got {t_start}")
    return _unipc(eps_fn, x, alphas_cumprod, list(range(t_start, -1, -1)), order=3, progress=progress)


@torch.no_grad()
def sample_plms(model_fn: ModelFn, x: torch.Tensor, alphas_cumprod: torch.Tensor, steps: int,
                hook: Optional[Hook] = None, progress: bool = False, start_step: int = 0,
                prediction: str = "eps", spacing: str = "leading") -> torch.Tensor:
    """PLMS (Liu et al. 2022) exactly as the original: a pseudo improved-Euler first step, then
    Adams-Bashforth of order 2, 3 and 4 on the stored eps history. Where ``alphas_cumprod`` is 0 (a
    zero-terminal-SNR start) the clean-sample estimate of the first step is the mean of the two x0
    predictions, since eps says nothing about x0 there."""
    ts = sampling_timesteps(steps, alphas_cumprod.shape[0], spacing)
    a, a_prev, sigma = ddim_coefficients(alphas_cumprod, ts, 0.0)
    n = len(ts)
    _check_start(alphas_cumprod, ts[n - 1 - start_step] if 0 <= start_step < n else ts[-1], prediction)
    old_eps: list[torch.Tensor] = []
    for i in _steps(n, progress, "PLMS", start_step):
        k = n - 1 - i
        if hook is not None:
            x = hook(i, x, int(ts[k]))
        e_t, x0_t = _split(model_fn(x, _tvec(x, ts[k])), x, a[k], prediction)
        x0_prime = None
        if not old_eps:
            x_next = _ddim_update(x, e_t, x0_t, a_prev[k], sigma[k])
            k_next = max(k - 1, 0)
            e_next, x0_next = _split(model_fn(x_next, _tvec(x, ts[k_next])), x_next, a[k_next], prediction)
            e_prime = (e_t + e_next) / 2
            if float(a[k]) <= 0.0:
                x0_prime = (x0_t + x0_next) / 2
        elif len(old_eps) == 1:
            e_prime = (3 * e_t - old_eps[-1]) / 2
        elif len(old_eps) == 2:
            e_prime = (23 * e_t - 16 * old_eps[-1] + 5 * old_eps[-2]) / 12
        else:
            e_prime = (55 * e_t - 59 * old_eps[-1] + 37 * old_eps[-2] - 9 * old_eps[-3]) / 24
        if x0_prime is None:
            _, x0_prime = _split(e_prime, x, a[k], "eps")
        x = _ddim_update(x, e_prime, x0_prime, a_prev[k], sigma[k])
        old_eps.append(e_t)
        if len(old_eps) > 3:
            old_eps.pop(0)
    return x


def logsnr_timesteps(alphas_cumprod: torch.Tensor, t_start: int, steps: int) -> list[int]:
    """Integer timesteps from ``t_start`` down to 0, evenly spaced in log-SNR (DPM-Solver's
    ``logSNR`` skip type), made strictly decreasing where rounding would repeat a timestep."""
    ac = alphas_cumprod.detach().double().cpu()
    lam = 0.5 * torch.log(ac / (1 - ac))
    targets = torch.linspace(float(lam[t_start]), float(lam[0]), steps + 1, dtype=torch.float64)
    return strictly_decreasing([int(torch.argmin((lam - v).abs())) for v in targets], t_start)


def strictly_decreasing(grid: Sequence[float], t_start: int) -> list[int]:
    """Round a decreasing timestep grid to integers from ``t_start`` to 0, bumping entries up where
    rounding would repeat a timestep."""
    out = [int(round(float(t))) for t in grid]
    out[0], out[-1] = int(t_start), 0
    for i in range(len(out) - 2, -1, -1):
        out[i] = max(out[i], out[i + 1] + 1)
    return out


@torch.no_grad()
def sample_dpmpp_2m(model_fn: ModelFn, x: torch.Tensor, alphas_cumprod: torch.Tensor, steps: int,
                    hook: Optional[Hook] = None, progress: bool = False, start_step: int = 0,
                    prediction: str = "eps", spacing: str = "leading") -> torch.Tensor:
    """DPM-Solver++(2M) (Lu et al. 2022), data-prediction form, multistep second order.

    Solves the same problem as PLMS 50, the paper's sampler, with any ``steps`` (see
    :func:`dpm_timesteps`), but places its steps evenly in log-SNR (half log-SNR
    ``lambda = log(sqrt(a) / sqrt(1 - a))``), which suits the multistep extrapolation far better than
    DDIM's uniform grid (whose last step spans a large log-SNR jump).
    """
    return _dpmpp_2m(model_fn, x, alphas_cumprod, dpm_timesteps(alphas_cumprod, steps, spacing), hook, progress,
                     start_step, prediction)


def _dpmpp_2m(model_fn: ModelFn, x: torch.Tensor, alphas_cumprod: torch.Tensor, grid: list[int],
              hook: Optional[Hook] = None, progress: bool = False, start_step: int = 0,
              prediction: str = "eps") -> torch.Tensor:
    """DPM-Solver++(2M) over the decreasing integer timesteps ``grid`` (see :func:`sample_dpmpp_2m`). A step
    from ``alphas_cumprod`` 0 (infinite log-SNR step) is first order: the DDIM step to the next timestep."""
    _check_start(alphas_cumprod, grid[min(start_step, len(grid) - 1)], prediction)
    alphas = alphas_cumprod.detach().double().cpu()[torch.as_tensor(grid)]
    lam = 0.5 * torch.log(alphas / (1 - alphas))
    prev_x0: Optional[torch.Tensor] = None
    for i in _steps(len(grid) - 1, progress, "DPM++2M", start_step):
        if hook is not None:
            x = hook(i, x, grid[i])
        a_t, a_s = alphas[i].item(), alphas[i + 1].item()
        _, x0 = split_prediction(model_fn(x, _tvec(x, grid[i])), x, a_t ** 0.5, (1 - a_t) ** 0.5, prediction)
        h = (lam[i + 1] - lam[i]).item()
        d = x0
        if prev_x0 is not None and h > 0 and math.isfinite(lam[i - 1].item()):
            r = (lam[i] - lam[i - 1]).item() / h
            d = (1 + 1 / (2 * r)) * x0 - (1 / (2 * r)) * prev_x0
        x = ((1 - a_s) / (1 - a_t)) ** 0.5 * x - a_s ** 0.5 * float(np.expm1(-h)) * d
        prev_x0 = x0
    return x


def _unipc_coefficients(rks: list[float], hh: float, order: int) -> tuple[np.ndarray, np.ndarray]:
    """UniPC's linear system (Zhao et al. 2023, B(h) = expm1(h), "bh2"): rows ``r_k ** (j - 1)`` and
    right-hand side ``phi_j(h) * j! / B(h)``, ``phi`` the exponential-integrator functions."""
    b_h = float(np.expm1(hh))
    h_phi_k = b_h / hh - 1.0
    factorial = 1.0
    rows, rhs = [], []
    r = np.asarray(rks, dtype=np.float64)
    for j in range(1, order + 1):
        rows.append(r ** (j - 1))
        rhs.append(h_phi_k * factorial / b_h)
        factorial *= j + 1
        h_phi_k = h_phi_k / hh - 1.0 / factorial
    return np.stack(rows), np.asarray(rhs)


@torch.no_grad()
def sample_unipc(model_fn: ModelFn, x: torch.Tensor, alphas_cumprod: torch.Tensor, steps: int,
                 hook: Optional[Hook] = None, progress: bool = False, start_step: int = 0,
                 order: int = 2, prediction: str = "eps", spacing: str = "leading") -> torch.Tensor:
    """UniPC (Zhao et al. 2023), data prediction, B(h) = expm1(h): a multistep predictor of ``order``
    plus a corrector one order higher that reuses the model evaluation the next step needs anyway,
    so ``steps`` steps still cost ``steps`` evaluations (the last step is not corrected). Same grid
    as DPM-Solver++ (:func:`dpm_timesteps`).

    ``order`` defaults to 2, the authors' choice for guided sampling. On four demo checkpoints at
    guidance 3 (``benchmarks/bench_grids.py``) order 2 had the lower ODE error on all four at 15
    steps and on three of four at 20 (geometric-mean ratio to PLMS 50's error 0.68 vs 0.87).

    ``hook`` sees the predicted latent before each evaluation; the corrector's change is added to
    what the hook returns (for latent blending this keeps the blended region blended).
    """
    return _unipc(model_fn, x, alphas_cumprod, dpm_timesteps(alphas_cumprod, steps, spacing), order, hook,
                  progress, start_step, prediction)


def _unipc(model_fn: ModelFn, x: torch.Tensor, alphas_cumprod: torch.Tensor, grid: list[int], order: int,
           hook: Optional[Hook] = None, progress: bool = False, start_step: int = 0,
           prediction: str = "eps") -> torch.Tensor:
    """UniPC over the decreasing integer timesteps ``grid`` (see :func:`sample_unipc`). A step from
    ``alphas_cumprod`` 0 is the DDIM step, and its x0 prediction never enters a higher-order term."""
    if order not in (1, 2, 3):
        raise ValueError(f"UniPC order must be 1, 2 or 3, got {order}")
    _check_start(alphas_cumprod, grid[min(start_step, len(grid) - 1)], prediction)
    alphas = alphas_cumprod.detach().double().cpu()[torch.as_tensor(grid)]
    lam = (0.5 * torch.log(alphas / (1 - alphas))).tolist()
    alpha, sigma = alphas.sqrt().tolist(), (1 - alphas).sqrt().tolist()

    def data_pred(x_in: torch.Tensor, i: int) -> torch.Tensor:
        return split_prediction(model_fn(x_in, _tvec(x_in, grid[i])), x_in, alpha[i], sigma[i], prediction)[1]

    n = len(grid) - 1
    if hook is not None:
        x = hook(start_step, x, grid[start_step])
    history = [(start_step, data_pred(x, start_step))]  # (grid index, x0 prediction there)
    for i in _steps(n, progress, "UniPC", start_step):
        s, t = i, i + 1
        m0 = history[-1][1]
        if not math.isfinite(lam[s]):  # from zero SNR: x_t = sigma_t x_s + alpha_t x0, no correction
            x = sigma[t] * x + alpha[t] * m0
            if t == n:
                break
            x = hook(t, x, grid[t]) if hook is not None else x
            history = [(t, data_pred(x, t))]
            continue
        h = lam[t] - lam[s]
        hh = -h
        p = min(order, len(history))
        rks = [(lam[k] - lam[s]) / h for k, _ in history[-2:-p - 1:-1]] if p > 1 else []
        d1s = [(m - m0) / r for (_, m), r in zip(history[-2:-p - 1:-1], rks)]
        rows, rhs = _unipc_coefficients(rks + [1.0], hh, p)
        b_h = float(np.expm1(hh))
        x_base = (sigma[t] / sigma[s]) * x - alpha[t] * b_h * m0
        x_pred = x_base
        if d1s:
            rhos_p = [0.5] if p == 2 else np.linalg.solve(rows[:-1, :-1], rhs[:-1]).tolist()
            x_pred = x_base - alpha[t] * b_h * sum(r * d for r, d in zip(rhos_p, d1s))
        if t == n:
            x = x_pred
            break
        x_eval = hook(t, x_pred, grid[t]) if hook is not None else x_pred
        m_t = data_pred(x_eval, t)
        rhos_c = [0.5] if p == 1 else np.linalg.solve(rows, rhs).tolist()
        corr = sum(r * d for r, d in zip(rhos_c[:-1], d1s)) if d1s else torch.zeros_like(x)
        x_corr = x_base - alpha[t] * b_h * (corr + rhos_c[-1] * (m_t - m0))
        x = x_eval + (x_corr - x_pred)
        history = (history + [(t, m_t)])[-order:]
    return x


def dpm_timesteps(alphas_cumprod: torch.Tensor, steps: int, spacing: str = "leading") -> list[int]:
    """The grid of DPM-Solver++ and UniPC, ``steps + 1`` decreasing timesteps ending at 0.

    ``leading``: even in log-SNR from PLMS 50's first timestep (981 of 1000) down to 0, whatever
    ``steps``; every step count thus solves the same initial-value problem as the paper's sampler, so a
    seed gives nearly the same image with each, and their ODE errors share one reference solve.
    ``trailing``: ``T - 1`` (where a zero-terminal-SNR schedule has no signal left), then even in log-SNR
    from the second trailing timestep (``T - 1 - T / steps``) down to 0. (Uniform trailing steps to 0
    leave the last steps far too long in log-SNR: on Gaussian data 20 steps were 20x less accurate.)"""
    num_train = alphas_cumprod.shape[0]
    if spacing == "trailing":
        if not 1 <= steps <= num_train // 2:
            raise ValueError(f"steps must be in 1..{num_train // 2} for DPM-Solver++/UniPC, got {steps}")
        if steps == 1:
            return [num_train - 1, 0]
        t1 = int(trailing_timesteps(steps, num_train)[-2])
        return strictly_decreasing([num_train - 1] + logsnr_timesteps(alphas_cumprod, t1, steps - 1), num_train - 1)
    if spacing != "leading":
        raise ValueError(f"spacing must be one of {', '.join(SPACINGS)}, got {spacing!r}")
    t_start = int(uniform_timesteps(min(50, num_train), num_train)[-1])
    if not 1 <= steps <= t_start:
        raise ValueError(f"steps must be in 1..{t_start} for DPM-Solver++/UniPC, got {steps}")
    return logsnr_timesteps(alphas_cumprod, t_start, steps)


def start_timestep(sampler: str, alphas_cumprod: torch.Tensor, steps: int, start_step: int = 0,
                   spacing: str = "leading") -> int:
    """The timestep whose noise level a sampler expects ``x`` at when it starts at ``start_step``
    (SDEdit-style starts from a noised real image)."""
    if sampler in ("dpmsolver++", "unipc"):
        return dpm_timesteps(alphas_cumprod, steps, spacing)[start_step]
    ts = sampling_timesteps(steps, alphas_cumprod.shape[0], spacing)
    return int(ts[len(ts) - 1 - start_step])


SAMPLERS = {"ddim": sample_ddim, "plms": sample_plms, "dpmsolver++": sample_dpmpp_2m, "unipc": sample_unipc}
