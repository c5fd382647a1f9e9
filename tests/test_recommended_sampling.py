"""A checkpoint's config recommends its sampling settings; infer.py and the page use them when no flag says
otherwise; --guidance_interval restricts guidance to a band of timesteps; --guidance_low guides the low
frequencies with another scale."""
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from omegaconf import OmegaConf

import infer
from inference.generate import GenerationOptions, recommended_sampling, sampling_defaults
from ldm.checkpoint import load_models, model_sections, save_checkpoint
from ldm.config import check_config
from ldm.diffusion.guidance import guided_eps_fn
from runtime.errors import UserError
from tools.tiny_model import make_tiny_checkpoint, write_masks

RECOMMENDED = {"sampler": "unipc", "steps": 3, "guidance_scale": 2.0, "guidance_interval": [100, 800],
               "guidance_low": [1.0, 3]}


def with_sampling(src: Path, dst: Path, sampling) -> Path:
    models = load_models(src, device=torch.device("cpu"))
    cfg = OmegaConf.create(OmegaConf.to_container(models.config))
    cfg.sampling = sampling
    return save_checkpoint(dst, model_sections(models), cfg)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("rec")
    plain = make_tiny_checkpoint(root / "plain.safetensors")
    masks = root / "masks"
    write_masks(masks, ["In_1", "Sc_2"])
    return plain, with_sampling(plain, root / "rec.safetensors", RECOMMENDED), masks


def settings(out: Path) -> dict:
    return json.loads((out / "generation.json").read_text())["settings"]


def run(ckpt, masks, out, *extra):
    assert infer.main(["--ckpt", str(ckpt), "--mask_dir", str(masks), "--out", str(out), "--device", "cpu",
                       *map(str, extra)]) == 0
    return settings(out)


def test_infer_uses_the_checkpoints_recommendation(tiny, tmp_path, capsys):
    _, rec, masks = tiny
    s = run(rec, masks, tmp_path / "a")
    assert (s["sampler"], s["steps"], s["guidance_scale"], s["guidance_interval"]) == ("unipc", 3, 2.0, [100, 800])
    assert s["guidance_low"] == [1.0, 3]
    assert ("sampling: unipc 3 steps, guidance 2 at timesteps 100-800, low frequencies (box 3) 1"
            in capsys.readouterr().out)
    records = json.loads((tmp_path / "a" / "generation.json").read_text())["images"]
    assert all(r["guidance_low"] == [1.0, 3] for r in records.values())


def test_flags_override_and_another_sampler_drops_the_recommended_steps(tiny, tmp_path):
    _, rec, masks = tiny
    s = run(rec, masks, tmp_path / "b", "--guidance_scale", 4, "--guidance_interval", 0, 999, "--steps", 2,
            "--guidance_low", 4, 0)
    assert (s["sampler"], s["steps"], s["guidance_scale"], s["guidance_interval"]) == ("unipc", 2, 4.0, [0, 999])
    assert s["guidance_low"] == [4.0, 0]
    s = run(rec, masks, tmp_path / "c", "--sampler", "ddim", "--steps", 2)
    assert (s["sampler"], s["steps"], s["guidance_scale"], s["guidance_interval"]) == ("ddim", 2, 2.0, None)


def test_without_a_recommendation_the_papers_settings(tiny):
    plain, _, _ = tiny
    config = load_models(plain, device=torch.device("cpu")).config
    assert recommended_sampling(config) == {}
    assert sampling_defaults(config) == dict(sampler="plms", steps=None, guidance_scale=3.0, guidance_interval=None,
                                             guidance_low=None)
    assert GenerationOptions(**sampling_defaults(config)).steps == 50


@pytest.mark.parametrize("bad", [{"sampler": "euler"}, {"steps": 0}, {"guidance_scale": float("nan")},
                                 {"guidance_interval": [900, 100]}, {"guidance_interval": [5]},
                                 {"guidance_low": [1, 4]}, {"guidance_low": [float("inf"), 3]}])
def test_a_bad_sampling_section_is_one_line(tiny, tmp_path, bad):
    plain, _, masks = tiny
    ckpt = with_sampling(plain, tmp_path / "bad.safetensors", bad)
    with pytest.raises(UserError, match="section sampling") as err:
        infer.main(["--ckpt", str(ckpt), "--mask_dir", str(masks), "--out", str(tmp_path / "o"), "--device", "cpu"])
    assert "\n" not in str(err.value)


def test_the_sampling_section_has_strict_keys(tiny):
    plain, _, _ = tiny
    cfg = OmegaConf.to_container(load_models(plain, device=torch.device("cpu")).config)
    cfg["sampling"] = {"sampler": "unipc", "guidance": 2}
    with pytest.raises(UserError, match="sampling.guidance"):
        check_config(cfg, "config x")


@pytest.mark.parametrize("flag", [["--guidance_interval", "5", "2"], ["--guidance_interval", "-1", "2"],
                                  ["--guidance_low", "1", "4"], ["--guidance_low", "1", "-3"],
                                  ["--guidance_low", "nan", "3"], ["--guidance_low", "1", "2.5"]])
def test_bad_interval_or_low_flag(tiny, tmp_path, flag):
    plain, _, masks = tiny
    with pytest.raises(UserError, match=flag[0]):
        infer.main(["--ckpt", str(plain), "--mask_dir", str(masks), "--out", str(tmp_path / "o"), *flag])


def test_interval_guides_only_inside_the_band():
    calls = []

    def unet(x, t, context, tokens, extra):
        calls.append(x.shape[0])
        return context.expand(x.shape[0], -1) * torch.ones_like(x)

    cond = SimpleNamespace(context=torch.ones(1, 1), grounding_tokens=None, extra=None,
                           cat=lambda u: SimpleNamespace(context=torch.tensor([[1.0], [0.0]]),
                                                         grounding_tokens=None, extra=None))
    uncond = SimpleNamespace(context=torch.zeros(1, 1), grounding_tokens=None, extra=None)
    fn = guided_eps_fn(unet, cond, uncond, 3.0, interval=(100, 500))
    x = torch.zeros(1, 4)
    assert torch.allclose(fn(x, torch.tensor([300])), torch.full((1, 4), 3.0))   # u + 3 (c - u) = 3
    assert torch.allclose(fn(x, torch.tensor([900])), torch.ones(1, 4))         # conditional alone
    assert calls == [2, 1]


def test_page_defaults_follow_the_recommendation(tiny, tmp_path):
    pytest.importorskip("gradio")
    from webapp.engine import Engine
    from webapp.handlers import Page
    from webapp.keep import KeptPairs

    _, rec, _ = tiny
    engine = Engine(rec, device="cpu")
    page = Page(engine, KeptPairs(tmp_path / "kept", engine.keep_settings()), tmp_path)
    assert engine.recommended["sampler"] == "unipc" and page.default_steps("unipc") == 3
    assert page.default_steps("plms") == 50
    assert engine.options("unipc", 3, 2.0).guidance_interval == (100, 800)
    assert engine.options("ddim", 3, 2.0).guidance_interval is None
    assert engine.options("ddim", 3, 2.0).guidance_low == (1.0, 3)


def test_low_frequency_guidance_splits_the_difference_by_frequency():
    from ldm.diffusion.guidance import combine, low_pass

    torch.manual_seed(0)
    u, c = torch.randn(2, 1, 16, 16), torch.randn(2, 1, 16, 16)
    assert torch.allclose(combine(u, c, 3.0), u + 3 * (c - u))
    assert torch.allclose(combine(u, c, 3.0, (3.0, 5)), u + 3 * (c - u), atol=1e-6)  # same scale: plain guidance
    # low scale 1 at size 0: the guided output keeps the conditional output's mean, the detail is guided by 3
    out = combine(u, c, 3.0, (1.0, 0))
    assert torch.allclose(out.mean((-2, -1)), c.mean((-2, -1)), atol=1e-6)
    assert torch.allclose(out - out.mean((-2, -1), keepdim=True),
                          (u + 3 * (c - u)) - (u + 3 * (c - u)).mean((-2, -1), keepdim=True), atol=1e-5)
    # a box low-pass keeps constants and removes a checkerboard
    assert torch.allclose(low_pass(torch.full((1, 1, 8, 8), 2.0), 3), torch.full((1, 1, 8, 8), 2.0))
    checker = (torch.arange(8)[:, None] + torch.arange(8)[None]) % 2 * 2.0 - 1
    assert low_pass(checker.view(1, 1, 8, 8), 3)[..., 1:-1, 1:-1].abs().max() < 0.12


def test_low_frequency_guidance_runs_the_unconditional_branch_even_at_scale_1():
    calls = []

    def unet(x, t, context, tokens, extra):
        calls.append(x.shape[0])
        return context.view(-1, 1, 1, 1) * torch.ones_like(x)

    cond = SimpleNamespace(context=torch.ones(1, 1), grounding_tokens=None, extra=None,
                           cat=lambda u: SimpleNamespace(context=torch.tensor([[1.0], [0.0]]),
                                                         grounding_tokens=None, extra=None))
    uncond = SimpleNamespace(context=torch.zeros(1, 1), grounding_tokens=None, extra=None)
    x = torch.zeros(1, 1, 4, 4)
    out = guided_eps_fn(unet, cond, uncond, 1.0, low=(0.0, 0))(x, torch.tensor([300]))
    assert calls == [2] and torch.allclose(out, torch.zeros_like(x))   # detail at scale 1 (= 0 here), mean at 0
