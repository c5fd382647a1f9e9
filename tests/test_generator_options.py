"""The generator's process options end to end: training targets and dropout, checkpoints that carry the
settings, inference that reads them, and the refusals."""
from __future__ import annotations

import pytest
import torch
from train_helpers import make_trainer, tiny_train_config

from inference.jobs import seed_noise
from ldm.checkpoint import CheckpointError, load_models
from ldm.diffusion.guidance import Conditioning, guided_eps_fn
from ldm.modules.identity_autoencoder import IdentityAutoencoder
from training.trainer import unconditional_inputs

V_ZTSNR = ["diffusion.params.zero_terminal_snr=true", "diffusion.params.parameterization=v",
           "diffusion.params.timestep_spacing=trailing"]


@pytest.fixture(scope="module")
def config(tmp_path_factory):
    return tiny_train_config(tmp_path_factory.mktemp("cfg"))


def batch_of(tr, n: int = 2):
    return next(iter(torch.utils.data.DataLoader(tr.dataset, batch_size=n)))


class Recorder(torch.nn.Module):
    """Stands in for the denoiser: records its inputs, returns zeros."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def forward(self, x_noisy, t, context, sem, grounding_mask, keep_extra=None):
        self.calls.append({"x": x_noisy, "t": t, "context": context, "gmask": grounding_mask, "keep": keep_extra})
        return torch.zeros_like(x_noisy)


def test_unconditional_inputs_drop_exactly_the_named_parts():
    drop = torch.tensor([True, False, True])
    gmask = torch.ones(3)
    caps, gm, keep = unconditional_inputs(["a", "b", "c"], gmask, drop, ("prompt", "tokens"))
    assert caps == ["", "b", ""] and gm.tolist() == [0.0, 1.0, 0.0] and keep is None
    caps, gm, keep = unconditional_inputs(["a", "b", "c"], gmask, drop, ("downsampler",))
    assert caps == ["a", "b", "c"] and gm.tolist() == [1.0, 1.0, 1.0] and keep.tolist() == [0.0, 1.0, 0.0]


def test_v_model_trains_on_v_and_reaches_the_last_timestep(config, tmp_path):
    tr = make_trainer(config, tmp_path, "v", "--set", *V_ZTSNR, "train.min_snr_gamma=5")
    assert tr.models.diffusion.parameterization == "v" and float(tr.models.diffusion.alphas_cumprod[-1]) == 0.0
    rec, drawn = Recorder(), {}
    tr.denoiser = rec
    encode, noise = tr.models.autoencoder.encode, tr.models.diffusion.noise
    tr.models.autoencoder.encode = lambda *a, **k: drawn.setdefault("x0", encode(*a, **k))
    tr.models.diffusion.noise = lambda *a, **k: drawn.setdefault("noise", noise(*a, **k))
    loss = tr.compute_loss(batch_of(tr), torch.Generator().manual_seed(3))
    t = rec.calls[0]["t"]
    target = tr.models.diffusion.target(drawn["x0"], drawn["noise"], t)
    a = tr.models.diffusion.alphas_cumprod[t].view(-1, 1, 1, 1)
    torch.testing.assert_close(target, a.sqrt() * drawn["noise"] - (1 - a).sqrt() * drawn["x0"])
    weight = torch.clamp(a.flatten() / (1 - a.flatten()) + 1, max=5) / (a.flatten() / (1 - a.flatten()) + 1)
    torch.testing.assert_close(loss, (target.pow(2).flatten(1).mean(1) * weight).mean())
    # the terminal timestep gets a finite, non-zero weight
    last = torch.tensor([tr.models.diffusion.num_timesteps - 1])
    from ldm.diffusion.schedule import min_snr_weight
    assert float(min_snr_weight(tr.models.diffusion.alphas_cumprod[last], 5.0, "v", plus_one=True)) == 1.0


def test_cond_drop_rate_is_honoured_and_drops_together(config, tmp_path):
    tr = make_trainer(config, tmp_path, "drop", "--set", "train.cond_drop_prob=0.3", "train.null_grounding_prob=0",
                      "diffusion.params.uncond_drop=[prompt,tokens,downsampler]")
    rec, captions = Recorder(), []
    tr.denoiser = rec
    text = tr.text_context
    tr.text_context = lambda caps: captions.extend(caps) or text(caps)
    batch = batch_of(tr, 8)
    for i in range(40):
        tr.compute_loss(batch, torch.Generator().manual_seed(i))
    dropped_prompt = torch.tensor([c == "" for c in captions])
    gmask = torch.cat([c["gmask"] for c in rec.calls])
    keep = torch.cat([c["keep"] for c in rec.calls])
    assert abs(float(dropped_prompt.float().mean()) - 0.3) < 0.08
    assert torch.equal(gmask == 0, dropped_prompt) and torch.equal(keep == 0, dropped_prompt)


def test_no_cond_drop_keeps_the_original_random_stream(config, tmp_path):
    plain = make_trainer(config, tmp_path, "plain")
    zero = make_trainer(config, tmp_path, "zero", "--set", "train.cond_drop_prob=0")
    batch = batch_of(plain)
    assert torch.equal(plain.compute_loss(batch, torch.Generator().manual_seed(0)),
                       zero.compute_loss(batch, torch.Generator().manual_seed(0)))


@pytest.mark.parametrize("item", ["train.cond_drop_prob=1.5", "train.cond_drop_prob=nan", "train.cond_drop_prob=-0.1"])
def test_bad_dropout_rates_are_one_line_errors(config, tmp_path, item):
    from runtime.errors import UserError
    with pytest.raises(UserError, match="cond_drop_prob must lie in"):
        make_trainer(config, tmp_path, "bad", "--set", item)


def test_checkpoint_carries_the_process_and_inference_reads_it(config, tmp_path):
    import main
    from inference.generate import load_pipeline
    from ldm.config import load_config

    args = ["--yaml_file", str(config), "--OUTPUT_ROOT", str(tmp_path), "--name", "run", "--total_iters", "1",
            "--set", *V_ZTSNR, "diffusion.params.offset_noise=0.1"]
    assert main.main(args) == 0
    ckpt = tmp_path / "run" / "checkpoints" / "latest.safetensors"
    pipe = load_pipeline(ckpt)
    d = pipe.models.diffusion
    assert (d.parameterization, d.timestep_spacing, d.zero_terminal_snr, d.offset_noise) == ("v", "trailing", True, 0.1)
    # a config that says eps / the original schedule is refused with one line
    with pytest.raises(CheckpointError, match="noise schedule"):
        load_models(ckpt, config=load_config(config))
    from omegaconf import OmegaConf
    cfg = OmegaConf.merge(load_config(config), {"diffusion": {"params": {
        "zero_terminal_snr": True, "parameterization": "v", "timestep_spacing": "trailing", "offset_noise": 0.0}}})
    with pytest.raises(CheckpointError, match="offset_noise"):
        load_models(ckpt, config=cfg)
    shifted = OmegaConf.merge(cfg, {"diffusion": {"params": {"offset_noise": 0.1, "snr_shift": 0.5}}})
    with pytest.raises(CheckpointError, match="snr_shift 0.5"):
        load_models(ckpt, config=shifted)


def test_offset_start_noise_is_seeded_and_plain_noise_unchanged():
    plain = seed_noise(5, (2, 8, 8))
    assert torch.equal(plain, seed_noise(5, (2, 8, 8), 0.0))
    offset = seed_noise(5, (2, 8, 8), 0.5)
    assert torch.equal(offset, seed_noise(5, (2, 8, 8), 0.5))
    shift = (offset - plain).flatten(1)
    assert torch.allclose(shift, shift[:, :1].expand_as(shift)) and float(shift.abs().min()) > 0


def test_identity_autoencoder_centres_and_restores():
    ae = IdentityAutoencoder(channels=1, scale_factor=2.5, shift_factor=-0.2)
    x = torch.rand(2, 1, 4, 4) * 2 - 1
    z = ae.encode(x)
    torch.testing.assert_close(z, (x + 0.2) * 2.5)
    torch.testing.assert_close(ae.decode(z)[:, :1], x)
    with pytest.raises(ValueError):
        IdentityAutoencoder(channels=1, shift_factor=[0.1, 0.2])


def test_guidance_interval_guides_only_inside():
    calls = []

    def unet(x, t, context, tokens, extra):
        calls.append(x.shape[0])
        return context.mean(dim=(1, 2)).view(-1, 1, 1, 1) * torch.ones_like(x)

    cond = Conditioning(torch.ones(1, 2, 2), torch.zeros(1, 1, 2))
    uncond = Conditioning(torch.zeros(1, 2, 2), torch.zeros(1, 1, 2))
    fn = guided_eps_fn(unet, cond, uncond, 3.0, interval=(100, 500))
    x = torch.zeros(1, 1, 2, 2)
    assert float(fn(x, torch.tensor([800])).mean()) == 1.0   # outside: the conditional output
    assert float(fn(x, torch.tensor([300])).mean()) == 3.0   # inside: 0 + 3 (1 - 0)
    assert calls == [1, 2]


def test_a_resumed_run_keeps_its_diffusion_process(config, tmp_path):
    import main

    base = ["--yaml_file", str(config), "--OUTPUT_ROOT", str(tmp_path), "--name", "run"]
    assert main.main([*base, "--total_iters", "1", "--set", *V_ZTSNR]) == 0
    with pytest.raises(CheckpointError, match="noise schedule"):
        main.main([*base, "--total_iters", "2"])


def test_latent_stats_reads_only_the_training_split(tmp_path):
    from omegaconf import OmegaConf

    from dataset.splits import make_split, save_split
    from ldm.config import load_config
    from training.latent_stats import latent_stats, main

    root = tmp_path / "data"
    (root / "Source_Images").mkdir(parents=True)
    (root / "Ground_truth").mkdir()
    import numpy as np
    from PIL import Image
    for i in range(1, 5):
        for prefix, level in (("In", 60), ("Pa", 200)):
            value = level if i <= 3 else 255  # the 4th of each is the (bright) held-out pair
            Image.fromarray(np.full((16, 16), value, np.uint8)).save(root / "Source_Images" / f"{prefix}_{i}.bmp")
            mask = np.zeros((16, 16), np.uint8)
            mask[4:8, 4:8] = 255
            Image.fromarray(mask).save(root / "Ground_truth" / f"{prefix}_{i}.png")
    split = make_split([f"{p}_{i}" for p in ("In", "Pa") for i in range(1, 5)], 0.25, 0)
    split["train"], split["test"] = [f"{p}_{i}" for p in ("In", "Pa") for i in range(1, 4)], ["In_4", "Pa_4"]
    save_split(split, tmp_path / "split.json")
    cfg = OmegaConf.merge(load_config("configs/demo.yaml"), {"data": {"image_size": 16, "random_flip": False}})
    mean, std = latent_stats(cfg, str(root), str(tmp_path / "split.json"), progress=False)
    grey = np.array([60, 200]) / 127.5 - 1  # the two training grey levels in [-1, 1]
    assert abs(mean - grey.mean()) < 1e-3 and abs(std - grey.std()) < 1e-3
    OmegaConf.save(cfg, tmp_path / "cfg.yaml")
    assert main(["--config", str(tmp_path / "cfg.yaml"), "--data_root", str(root), "--no_progress"]) == 0
