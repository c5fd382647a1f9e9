"""Samplers and guidance on analytic problems."""
import torch

from ldm.diffusion.guidance import Conditioning, guided_eps_fn
from ldm.diffusion.samplers import sample_ddim, sample_dpmpp_2m, sample_plms, uniform_timesteps
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
