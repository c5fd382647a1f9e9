"""Zero-terminal-SNR schedule, v-prediction, trailing spacing and offset noise (ldm.diffusion)."""
import pytest
import torch

from ldm.diffusion.samplers import SAMPLERS, dpm_timesteps, sampling_timesteps, split_prediction, start_timestep
from ldm.diffusion.schedule import NoiseSchedule, min_snr_weight, schedule_buffers

MU, S = 0.7, 0.3


def gaussian_model_fn(ac, prediction):
    """The exact eps- or v-prediction for data ~ N(MU, S^2)."""
    def model_fn(x, t):
        a = ac[t].view(-1, 1, 1, 1)
        var = a * S ** 2 + (1 - a)
        eps = torch.sqrt(1 - a) * (x - torch.sqrt(a) * MU) / var
        x0 = MU + torch.sqrt(a) * S ** 2 * (x - torch.sqrt(a) * MU) / var
        return eps if prediction == "eps" else torch.sqrt(a) * eps - torch.sqrt(1 - a) * x0
    return model_fn


def exact(x_t, ac, t_start):
    a0, a1 = ac[t_start], ac[0]
    z = (x_t - torch.sqrt(a0) * MU) / torch.sqrt(a0 * S ** 2 + 1 - a0)
    return torch.sqrt(a1) * MU + z * torch.sqrt(a1 * S ** 2 + 1 - a1)


def noise(n=256):
    return torch.randn(n, 1, 4, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)


def test_zero_terminal_snr_leaves_no_signal_and_keeps_the_first_step():
    plain, zero = schedule_buffers(), schedule_buffers(zero_terminal_snr=True)
    assert float(plain["alphas_cumprod"][-1]) > 4e-3
    assert float(zero["alphas_cumprod"][-1]) == 0.0 and float(zero["betas"][-1]) == 1.0
    torch.testing.assert_close(zero["alphas_cumprod"][0], plain["alphas_cumprod"][0])
    assert bool((zero["alphas_cumprod"][1:] < zero["alphas_cumprod"][:-1]).all())
    for name, value in zero.items():
        assert not torch.isnan(value).any(), name


def test_snr_shift_scales_every_timesteps_snr_and_keeps_zero_terminal_snr():
    zero = schedule_buffers(zero_terminal_snr=True)["alphas_cumprod"].double()
    shifted = schedule_buffers(zero_terminal_snr=True, snr_shift=(64 / 96) ** 2)["alphas_cumprod"].double()
    snr = zero[:-1] / (1 - zero[:-1])
    torch.testing.assert_close(shifted[:-1] / (1 - shifted[:-1]), snr * (64 / 96) ** 2, rtol=1e-4, atol=0)  # float32 buffers
    assert float(shifted[-1]) == 0.0 and bool((shifted[1:] < shifted[:-1]).all())
    for name, value in schedule_buffers(zero_terminal_snr=True, snr_shift=0.25).items():
        assert not torch.isnan(value).any(), name
    for name, value in schedule_buffers(zero_terminal_snr=True, snr_shift=1.0).items():  # 1: no shift
        torch.testing.assert_close(value, schedule_buffers(zero_terminal_snr=True)[name], rtol=0, atol=0)


def test_the_default_process_is_the_original():
    sched = NoiseSchedule()
    assert (sched.parameterization, sched.timestep_spacing, sched.offset_noise) == ("eps", "leading", 0.0)
    assert sched.uncond_drop == ("prompt", "tokens") and not sched.zero_terminal_snr
    for name, value in schedule_buffers().items():
        torch.testing.assert_close(getattr(sched, name), value)


@pytest.mark.parametrize("kwargs, words", [
    ({"zero_terminal_snr": True}, "parameterization: v"),
    ({"parameterization": "x0"}, "parameterization"),
    ({"timestep_spacing": "middle"}, "timestep_spacing"),
    ({"offset_noise": float("nan")}, "offset_noise"),
    ({"offset_noise": -0.1}, "offset_noise"),
    ({"uncond_drop": ["prompt", "mask"]}, "uncond_drop"),
    ({"uncond_drop": []}, "uncond_drop"),
    ({"snr_shift": 0.0}, "snr_shift"),
    ({"snr_shift": float("inf")}, "snr_shift"),
])
def test_bad_process_settings_are_refused(kwargs, words):
    with pytest.raises(ValueError, match=words):
        NoiseSchedule(**kwargs)


def test_trailing_timesteps_start_at_the_last_timestep():
    assert sampling_timesteps(10, spacing="trailing").tolist() == [99, 199, 299, 399, 499, 599, 699, 799, 899, 999]
    assert sampling_timesteps(50, spacing="leading")[-1] == 981
    grid = dpm_timesteps(schedule_buffers(zero_terminal_snr=True)["alphas_cumprod"], 20, "trailing")
    assert grid[0] == 999 and grid[1] == 949 and grid[-1] == 0 and len(grid) == 21
    assert all(a > b for a, b in zip(grid, grid[1:]))
    assert start_timestep("unipc", schedule_buffers()["alphas_cumprod"], 20, spacing="trailing") == 999
    assert start_timestep("ddim", schedule_buffers()["alphas_cumprod"], 20, 1, spacing="trailing") == 949


def test_v_and_eps_predictions_describe_the_same_point():
    x, out_eps = torch.randn(3, 1, 2, 2), torch.randn(3, 1, 2, 2)
    a = torch.tensor(0.3)
    alpha, sigma = a.sqrt(), (1 - a).sqrt()
    eps, x0 = split_prediction(out_eps, x, alpha, sigma, "eps")
    v = alpha * eps - sigma * x0
    eps_v, x0_v = split_prediction(v, x, alpha, sigma, "v")
    torch.testing.assert_close(eps_v, eps)
    torch.testing.assert_close(x0_v, x0)


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_a_v_model_samples_exactly_as_its_eps_form(name):
    ac = schedule_buffers()["alphas_cumprod"].double()
    x = noise(8)
    for spacing in ("leading", "trailing"):
        with_eps = SAMPLERS[name](gaussian_model_fn(ac, "eps"), x.clone(), ac, 15, spacing=spacing)
        with_v = SAMPLERS[name](gaussian_model_fn(ac, "v"), x.clone(), ac, 15, prediction="v", spacing=spacing)
        torch.testing.assert_close(with_v, with_eps, rtol=0, atol=1e-10)


@pytest.mark.parametrize("name, steps, tol", [("ddim", 50, 0.12), ("plms", 50, 0.03), ("dpmsolver++", 20, 0.015),
                                              ("unipc", 20, 0.01)])
@pytest.mark.parametrize("shift", [1.0, (64 / 96) ** 2])
def test_every_sampler_solves_a_zero_terminal_snr_v_model_from_pure_noise(name, steps, tol, shift):
    ac = schedule_buffers(zero_terminal_snr=True, snr_shift=shift)["alphas_cumprod"].double()
    x = noise()
    out = SAMPLERS[name](gaussian_model_fn(ac, "v"), x.clone(), ac, steps, prediction="v", spacing="trailing")
    assert torch.isfinite(out).all()
    if shift != 1.0 and name in ("ddim", "plms"):  # a noisier schedule leaves more to the last, coarse steps
        tol *= 2
    assert float((out - exact(x, ac, 999)).abs().max()) < tol
    # the brightness (mean) and the spread of the data come back from noise of mean 0
    assert abs(float(out.mean()) - MU) < 0.02 and abs(float(out.std()) - S) < 0.1


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_an_eps_model_cannot_start_at_zero_snr(name):
    ac = schedule_buffers(zero_terminal_snr=True)["alphas_cumprod"].double()
    with pytest.raises(ValueError, match="cannot start"):
        SAMPLERS[name](gaussian_model_fn(ac, "eps"), noise(2), ac, 10, spacing="trailing")


def test_min_snr_weight_plus_one_keeps_the_terminal_timestep():
    ac = torch.tensor([0.0, 0.5, 0.999])
    published = min_snr_weight(ac, 5.0, "v")
    assert float(published[0]) == 0.0
    plus_one = min_snr_weight(ac, 5.0, "v", plus_one=True)
    torch.testing.assert_close(plus_one, torch.tensor([1.0, 1.0, 5.0 / 1000.0]))


def test_v_target_and_offset_noise():
    sched = NoiseSchedule(zero_terminal_snr=True, parameterization="v", offset_noise=0.5)
    x0 = torch.randn(4, 2, 8, 8)
    t = torch.tensor([0, 10, 500, 999])
    n = torch.randn(4, 2, 8, 8)
    v = sched.target(x0, n, t)
    torch.testing.assert_close(v[3], -x0[3])  # no signal at the last timestep: v = -x0
    a = sched.alphas_cumprod[t].view(-1, 1, 1, 1)
    torch.testing.assert_close(v, a.sqrt() * n - (1 - a).sqrt() * x0)
    draws = sched.noise((4000, 2, 8, 8), generator=torch.Generator().manual_seed(0))
    means = draws.mean(dim=(2, 3))  # per-image, per-channel mean: variance 1/64 + 0.25
    assert abs(float(means.var()) - (1 / 64 + 0.25)) < 0.03
    plain = NoiseSchedule().noise((4000, 2, 8, 8), generator=torch.Generator().manual_seed(0))
    assert float(plain.mean(dim=(2, 3)).var()) < 0.03
