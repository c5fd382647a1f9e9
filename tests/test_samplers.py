"""Samplers and guidance on analytic problems."""
import pytest
import torch

from ldm.diffusion.guidance import Conditioning, guided_eps_fn
from ldm.diffusion.samplers import (
    SAMPLERS,
    sample_ddim,
    sample_ddim_dense,
    sample_dpmpp_2m,
    sample_plms,
    sample_reference,
    sample_unipc,
    start_timestep,
    uniform_timesteps,
)
from ldm.diffusion.schedule import NoiseSchedule, schedule_buffers


def gaussian_eps_fn(ac, mu, s):
    """Exact eps for data ~ N(mu, s^2): the probability-flow ODE has a closed-form solution."""
    def eps_fn(x, t):
        a = ac[t].view(-1, 1, 1, 1)
        var = a * s ** 2 + (1 - a)
        return torch.sqrt(1 - a) * (x - torch.sqrt(a) * mu) / var
    return eps_fn


def exact_solution(x_t, ac, t_start, mu, s):
    """Map x at alpha_cumprod[t_start] to the ODE solution at alpha_cumprod[0]."""
    a0, a1 = ac[t_start], ac[0]
    z = (x_t - torch.sqrt(a0) * mu) / torch.sqrt(a0 * s ** 2 + 1 - a0)
    return torch.sqrt(a1) * mu + z * torch.sqrt(a1 * s ** 2 + 1 - a1)


def test_uniform_timesteps_like_original():
    assert uniform_timesteps(10).tolist() == [1, 101, 201, 301, 401, 501, 601, 701, 801, 901]
    assert len(uniform_timesteps(50)) == 50 and uniform_timesteps(50)[-1] == 981
    assert uniform_timesteps(1000).tolist() == list(range(1000))


def test_solvers_converge_on_gaussian_data():
    ac = schedule_buffers()["alphas_cumprod"].double()
    mu, s = 0.7, 0.3
    x = torch.randn(4, 1, 4, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    eps_fn = gaussian_eps_fn(ac, mu, s)
    errors = {}
    for name, fn, steps in (("ddim", sample_ddim, 20), ("plms", sample_plms, 20), ("dpm", sample_dpmpp_2m, 20)):
        t0 = int(uniform_timesteps(steps)[-1])
        errors[name] = float((fn(eps_fn, x.clone(), ac, steps) - exact_solution(x, ac, t0, mu, s)).abs().max())
    assert errors["dpm"] < errors["ddim"] and errors["plms"] < errors["ddim"]
    assert errors["dpm"] < 1e-2 and errors["plms"] < 0.05


def test_reference_solve_is_far_more_accurate_than_dense_ddim():
    # measured (RMS to the exact solution): reference 6.7e-5, dense DDIM 1.5e-3
    ac = schedule_buffers()["alphas_cumprod"].double()
    mu, s = 0.7, 0.3
    x = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    eps_fn, exact = gaussian_eps_fn(ac, mu, s), exact_solution(x, ac, 951, mu, s)
    ref = float((sample_reference(eps_fn, x.clone(), ac, 951) - exact).pow(2).mean().sqrt())
    dense = float((sample_ddim_dense(eps_fn, x.clone(), ac, 951) - exact).pow(2).mean().sqrt())
    assert ref < 2e-4 and dense > 10 * ref, (ref, dense)


def test_unipc_converges_with_its_order():
    # measured (max error to the exact solution, 10 -> 20 steps): order 1 5.6e-2 -> 1.6e-2,
    # order 3 1.1e-3 -> 1.6e-5; DPM-Solver++(2M) 20 steps 4.8e-3
    ac = schedule_buffers()["alphas_cumprod"].double()
    mu, s = 0.7, 0.3
    x = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    eps_fn = gaussian_eps_fn(ac, mu, s)

    def err(steps, **kw):
        exact = exact_solution(x, ac, start_timestep("unipc", ac, steps), mu, s)
        return float((sample_unipc(eps_fn, x.clone(), ac, steps, **kw) - exact).abs().max())

    assert err(10, order=1) / err(20, order=1) > 2.5  # first order: about 2x per halving, plus start effects
    assert err(10, order=3) / err(20, order=3) > 20
    dpm20 = float((sample_dpmpp_2m(eps_fn, x.clone(), ac, 20)
                   - exact_solution(x, ac, start_timestep("dpmsolver++", ac, 20), mu, s)).abs().max())
    assert err(20, order=3) < 0.1 * dpm20


@pytest.mark.parametrize("order", [1, 2, 3])
def test_unipc_matches_the_diffusers_implementation(order):
    """Same grid, same model, no lower-order final steps: diffusers' UniPCMultistepScheduler (bh2)."""
    from diffusers import UniPCMultistepScheduler

    from ldm.diffusion.samplers import _unipc

    ac = schedule_buffers()["alphas_cumprod"].double()
    eps_fn = gaussian_eps_fn(ac, 0.7, 0.3)
    x = torch.randn(2, 1, 4, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    peer = UniPCMultistepScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                   solver_order=order, solver_type="bh2", lower_order_final=False,
                                   final_sigmas_type="sigma_min")  # ends at alphas_cumprod[0], as ours
    peer.set_timesteps(12)
    grid = [int(t) for t in peer.timesteps]
    y = x.clone()
    for t in grid:
        y = peer.step(eps_fn(y, torch.full((2,), t)), t, y).prev_sample
    ours = _unipc(eps_fn, x.clone(), ac, grid + [0], order)
    # measured: max |difference| 6e-7, 3e-7, 3e-6 (diffusers works partly in float32)
    assert float((ours - y).abs().max()) < 2e-5


def test_dpmpp_2m_matches_the_diffusers_implementation():
    from diffusers import DPMSolverMultistepScheduler

    from ldm.diffusion.samplers import _dpmpp_2m

    ac = schedule_buffers()["alphas_cumprod"].double()
    eps_fn = gaussian_eps_fn(ac, 0.7, 0.3)
    x = torch.randn(2, 1, 4, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    peer = DPMSolverMultistepScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                       algorithm_type="dpmsolver++", solver_order=2, solver_type="midpoint",
                                       lower_order_final=False, final_sigmas_type="sigma_min")
    peer.set_timesteps(12)
    grid = [int(t) for t in peer.timesteps]
    y = x.clone()
    for t in grid:
        y = peer.step(eps_fn(y, torch.full((2,), t)), t, y).prev_sample
    assert float((_dpmpp_2m(eps_fn, x.clone(), ac, grid + [0]) - y).abs().max()) < 2e-5


def test_unipc_hook_sees_every_evaluation_and_start_step_skips():
    ac = schedule_buffers()["alphas_cumprod"]
    eps_fn = gaussian_eps_fn(ac, 0.2, 0.4)
    x = torch.randn(1, 1, 2, 2, generator=torch.Generator().manual_seed(1))
    seen = []
    with_hook = sample_unipc(eps_fn, x, ac, 8, hook=lambda i, z, t: seen.append((i, t)) or z)
    torch.testing.assert_close(with_hook, sample_unipc(eps_fn, x, ac, 8))
    grid = [t for _, t in seen]
    assert [i for i, _ in seen] == list(range(8)) and grid[0] == start_timestep("unipc", ac, 8)
    assert grid == sorted(grid, reverse=True)
    seen.clear()
    sample_unipc(eps_fn, x, ac, 8, hook=lambda i, z, t: seen.append(i) or z, start_step=3)
    assert seen == list(range(3, 8))


def mixture_eps_fn(ac, mus, s, weights):
    """Exact eps for data ~ sum_k w_k N(mu_k, s^2) per pixel: a non-linear, stiff-ish ODE."""
    def eps_fn(x, t):
        a = ac[t].view(-1, 1, 1, 1, 1)
        var = a * s ** 2 + (1 - a)
        d = x.unsqueeze(-1) - torch.sqrt(a) * mus
        resp = torch.softmax(torch.log(weights) - 0.5 * d ** 2 / var, -1)
        score = -(resp * d).sum(-1) / var.squeeze(-1)
        return -torch.sqrt(1 - a.squeeze(-1)) * score
    return eps_fn


def distances_to_dense(eps_fn, x, ac, stride=1):
    """RMS of DDIM 20, PLMS 50, DPM-Solver++ 20 and UniPC 20 to the dense DDIM solve from each one's start."""
    out, dense = {}, {}
    for name, steps in (("ddim", 20), ("plms", 50), ("dpmsolver++", 20), ("unipc", 20)):
        coarse = SAMPLERS[name](eps_fn, x.clone(), ac, steps)
        t0 = start_timestep(name, ac, steps)
        if t0 not in dense:
            dense[t0] = sample_ddim_dense(eps_fn, x.clone(), ac, t0, stride=stride)
        out[name] = float((coarse - dense[t0]).pow(2).mean().sqrt())
    return out


def test_dense_ddim_is_ddim_with_every_timestep():
    ac = schedule_buffers()["alphas_cumprod"]
    eps_fn = gaussian_eps_fn(ac, 0.3, 0.5)
    x = torch.randn(2, 1, 3, 3, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(sample_ddim_dense(eps_fn, x, ac, 999), sample_ddim(eps_fn, x, ac, 1000))
    # a stride of 50 from 951 is DDIM 20's grid
    torch.testing.assert_close(sample_ddim_dense(eps_fn, x, ac, 951, stride=50), sample_ddim(eps_fn, x, ac, 20))
    assert start_timestep("ddim", ac, 20) == 951 and start_timestep("plms", ac, 50) == 981
    # the log-SNR solvers start where PLMS 50 does, whatever their step count
    assert {start_timestep(s, ac, n) for s in ("dpmsolver++", "unipc") for n in (5, 20, 25, 100)} == {981}
    with pytest.raises(ValueError, match="steps must be in 1..981"):
        sample_unipc(eps_fn, x, ac, 982)


def test_fewer_step_solvers_beat_ddim20_on_a_mixture_ode():
    # measured: DDIM 20 0.067, PLMS 50 0.015, DPM-Solver++ 20 0.017, UniPC 20 0.018 (the last two from 981)
    ac = schedule_buffers()["alphas_cumprod"].double()
    eps_fn = mixture_eps_fn(ac, torch.tensor([-0.8, 0.1, 0.9], dtype=torch.float64), 0.08,
                            torch.tensor([0.3, 0.3, 0.4], dtype=torch.float64))
    x = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    d = distances_to_dense(eps_fn, x, ac)
    assert max(d["dpmsolver++"], d["plms"], d["unipc"]) < 0.5 * d["ddim"], d


def test_fewer_step_solvers_beat_ddim20_on_the_tiny_guided_model(tmp_path):
    """The issue's check on the real generation path (tiny random model, guidance 3)."""
    from ldm.checkpoint import load_models
    from ldm.pipeline import DefFillerPipeline
    from tools.tiny_model import make_tiny_checkpoint

    pipe = DefFillerPipeline(load_models(make_tiny_checkpoint(tmp_path / "tiny.safetensors")))
    size = pipe.image_size
    sem = torch.zeros(1, pipe.in_dim, size, size)
    sem[:, 0] = 1
    sem[:, 0, size // 4:size // 2, 2:-2], sem[:, 3, size // 4:size // 2, 2:-2] = 0, 1
    cond, uncond = pipe.conditioning(sem, ["scratches"])
    eps_fn = guided_eps_fn(pipe.unet, cond, uncond, 3.0)
    x = torch.randn(pipe.latent_shape(1), generator=torch.Generator().manual_seed(0))
    # reference: DDIM through every 5th timestep (every timestep: ~5 min on one CPU thread). measured:
    # DDIM 20 0.375, PLMS 50 0.097, DPM-Solver++ 20 0.173, UniPC 20 0.156 (every timestep: 0.410/0.078/0.201/0.171)
    d = distances_to_dense(eps_fn, x, pipe.models.diffusion.alphas_cumprod, stride=5)
    print("RMS to dense DDIM (every 5th timestep) from each start:", d)
    assert max(d["dpmsolver++"], d["plms"], d["unipc"]) < 0.6 * d["ddim"], d


class ToyUNet(torch.nn.Module):
    """Depends on every conditioning input, so guidance mistakes show up."""

    def forward(self, x, t, context, tokens, extra):
        return (x * context.mean((1, 2)).view(-1, 1, 1, 1) + tokens.mean((1, 2)).view(-1, 1, 1, 1)
                + extra.mean(1, keepdim=True) + t.view(-1, 1, 1, 1) / 1000)


def test_batched_guidance_equals_two_forwards():
    g = torch.Generator().manual_seed(1)
    cond = Conditioning(torch.randn(2, 5, 3, generator=g), torch.randn(2, 4, 3, generator=g),
                        torch.randn(2, 2, 4, 4, generator=g))
    uncond = Conditioning(torch.randn(2, 5, 3, generator=g), torch.randn(2, 4, 3, generator=g), cond.extra)
    x, t = torch.randn(2, 1, 4, 4, generator=g), torch.tensor([5, 900])
    one = guided_eps_fn(ToyUNet(), cond, uncond, 3.0, batched=True)(x, t)
    two = guided_eps_fn(ToyUNet(), cond, uncond, 3.0, batched=False)(x, t)
    torch.testing.assert_close(one, two)
    plain = guided_eps_fn(ToyUNet(), cond, None, 3.0)(x, t)
    assert not torch.allclose(one, plain)


def test_q_sample_matches_buffers():
    sched = NoiseSchedule()
    x0, noise = torch.ones(2, 1, 2, 2), torch.zeros(2, 1, 2, 2)
    out = sched.q_sample(x0, torch.tensor([0, 999]), noise)
    torch.testing.assert_close(out[:, 0, 0, 0], sched.sqrt_alphas_cumprod[[0, 999]])

