"""UNet behaviour beyond the fixture: identity at init, checkpointing, autocast, gate scaling."""
from pathlib import Path

import torch

from ldm.build import build_models
from ldm.config import load_config

TINY = Path(__file__).resolve().parents[1] / "tests" / "assets" / "tiny.yaml"


def tiny_inputs(b=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, 4, 8, 8, generator=g)
    t = torch.randint(0, 1000, (b,), generator=g)
    ctx = torch.randn(b, 77, 32, generator=g)
    sem = torch.zeros(b, 8, 32, 32)
    sem[:, 0] = 1
    sem[:, 0, 8:20, 10:14] = 0
    sem[:, 2, 8:20, 10:14] = 1
    return x, t, ctx, sem


def randomize(module, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.05)


def test_fresh_gates_make_grounding_invisible():
    torch.manual_seed(0)
    unet = build_models(load_config(TINY), parts=("model",)).model.eval()
    with torch.no_grad():
        unet.out[-1].weight.normal_()  # make the output depend on everything upstream
        x, t, ctx, sem = tiny_inputs()
        extra = unet.downsample_grounding(sem)
        a = unet(x, t, ctx, unet.encode_grounding(sem, torch.ones(2)), extra)
        b = unet(x, t, ctx, unet.null_grounding(2), extra)
    assert torch.equal(a, b)  # tanh(0) gates: tokens cannot matter yet


def test_tokens_matter_once_gates_open_and_scale_zero_closes_them():
    unet = build_models(load_config(TINY), parts=("model",)).model.eval()
    randomize(unet)
    x, t, ctx, sem = tiny_inputs()
    with torch.no_grad():
        extra = unet.downsample_grounding(sem)
        tokens, null = unet.encode_grounding(sem, torch.ones(2)), unet.null_grounding(2)
        assert not torch.allclose(unet(x, t, ctx, tokens, extra), unet(x, t, ctx, null, extra))
        unet.set_gate_scale(0.0)
        assert torch.equal(unet(x, t, ctx, tokens, extra), unet(x, t, ctx, null, extra))


def test_null_tokens_equal_masked_encoder_output():
    unet = build_models(load_config(TINY), parts=("model",)).model.eval()
    randomize(unet)
    _, _, _, sem = tiny_inputs()
    with torch.no_grad():
        torch.testing.assert_close(unet.encode_grounding(sem, torch.zeros(2)), unet.null_grounding(2))


def test_gradient_checkpointing_gives_same_gradients():
    cfg = load_config(TINY)
    ref = build_models(cfg, parts=("model",)).model
    randomize(ref)
    cfg.model.params.use_checkpoint = True
    ck = build_models(cfg, parts=("model",)).model
    ck.load_state_dict(ref.state_dict())
    x, t, ctx, sem = tiny_inputs()
    grads = []
    for unet in (ref, ck):
        unet.train()
        x_ = x.clone().requires_grad_(True)
        out = unet(x_, t, ctx, unet.encode_grounding(sem, torch.ones(2)), unet.downsample_grounding(sem))
        out.square().mean().backward()
        grads.append(torch.cat([p.grad.flatten() for p in unet.parameters() if p.grad is not None]))
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-4, atol=1e-6)


def test_bf16_autocast_runs_and_stays_close():
    unet = build_models(load_config(TINY), parts=("model",)).model.eval()
    randomize(unet)
    x, t, ctx, sem = tiny_inputs()
    with torch.no_grad():
        extra, tokens = unet.downsample_grounding(sem), unet.encode_grounding(sem, torch.ones(2))
        ref = unet(x, t, ctx, tokens, extra)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = unet(x, t, ctx, tokens, extra)
    assert torch.isfinite(low).all()
    assert (low.float() - ref).abs().max() < 0.05 * ref.abs().max()
