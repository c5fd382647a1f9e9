"""What one optimiser step touches, train/eval modes, precision and the learning-rate schedule."""
from __future__ import annotations

import pytest
import torch
from train_helpers import make_trainer, state_of, tiny_train_config

from training.lr_schedule import WarmupSchedule
from training.trainer import trainable_names


@pytest.fixture(scope="module")
def config(tmp_path_factory):
    return tiny_train_config(tmp_path_factory.mktemp("cfg"))


def test_one_step_changes_trainable_and_leaves_frozen_bit_identical(config, tmp_path):
    tr = make_trainer(config, tmp_path, "step", "--total_iters", "1", "--warmup_steps", "0")
    names = {f"model.{n}" for n, _ in tr.named_params}
    # the paper's trainable set: gated self-attention, mask encoder, downsampler, widened first conv
    assert names and all(".fuser." in n or n.startswith(("model.position_net.", "model.downsample_net."))
                         or n == "model.input_blocks.0.0.weight" for n in names)
    assert "model.input_blocks.0.0.weight" in names and "model.input_blocks.0.0.bias" not in names
    assert any(n.startswith("model.position_net.") for n in names)
    assert any(n.startswith("model.downsample_net.") for n in names)
    before = state_of(tr)
    assert tr.train() == 1
    after = state_of(tr)
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    frozen_changed = changed - names
    assert not frozen_changed, f"frozen tensors changed: {sorted(frozen_changed)[:5]}"
    # every trained tensor moved (the null feature only gets a gradient from dropped samples)
    unchanged = names - changed - {"model.position_net.null_feature"}
    assert not unchanged, f"trainable tensors that did not change: {sorted(unchanged)[:5]}"
    # frozen parts have no gradient; modes: frozen in eval, trained in train
    for part, module in tr.models.parts().items():
        for n, p in module.named_parameters():
            assert p.requires_grad == (f"{part}.{n}" in names)
    assert not tr.models.autoencoder.training and not tr.models.text_encoder.training
    assert not tr.unet.training and not tr.unet.input_blocks.training
    assert tr.unet.position_net.training and tr.unet.downsample_net.training
    fusers = [m for n, m in tr.unet.named_modules() if n.endswith(".fuser")]
    assert fusers and all(m.training for m in fusers)


def test_trainable_all_trains_the_whole_unet_only(config, tmp_path):
    tr = make_trainer(config, tmp_path, "all", "--trainable", "all", "--ckpt", "none", "--total_iters", "1",
                      "--warmup_steps", "0")
    assert [n for n, _ in tr.named_params] == [n for n, _ in tr.unet.named_parameters()]
    assert tr.unet.training
    assert not any(p.requires_grad for p in tr.models.autoencoder.parameters())
    assert not any(p.requires_grad for p in tr.models.text_encoder.parameters())
    before = state_of(tr)
    tr.train()
    after = state_of(tr)
    assert all(torch.equal(before[k], after[k]) for k in before if not k.startswith("model."))
    assert not torch.equal(before["model.out.2.weight"], after["model.out.2.weight"])


def test_no_first_conv_training_without_downsampler():
    unet = torch.nn.Module()
    unet.downsample_net = None
    unet.input_blocks = torch.nn.ModuleList([torch.nn.ModuleList([torch.nn.Conv2d(4, 4, 3)])])
    assert trainable_names(unet, "grounding") == []
    unet.downsample_net = torch.nn.Conv2d(2, 2, 1)
    assert trainable_names(unet, "grounding") == ["input_blocks.0.0.weight", "downsample_net.weight",
                                                  "downsample_net.bias"]


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_autocast_step_on_cpu(config, tmp_path, precision):
    tr = make_trainer(config, tmp_path, precision, "--precision", precision, "--total_iters", "1",
                      "--warmup_steps", "0")
    assert (tr.scaler is not None) == (precision == "fp16")
    before = {n: p.detach().clone() for n, p in tr.named_params}
    tr.train()
    assert all(p.dtype == torch.float32 for _, p in tr.named_params)  # fp32 master weights
    if precision == "bf16":  # fp16 may legitimately skip its first step while the scale settles
        assert any(not torch.equal(before[n], p) for n, p in tr.named_params)
    assert all(torch.isfinite(p).all() for _, p in tr.named_params)


def test_warmup_then_constant_or_cosine():
    original = WarmupSchedule("constant", 4, 10)  # the default: the original's first step uses lr 0
    assert [original(s) for s in range(6)] == [0.0, 0.25, 0.5, 0.75, 1.0, 1.0]
    const = WarmupSchedule("constant", 4, 10, warmup_from_zero=False)
    assert [const(s) for s in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    cos = WarmupSchedule("cosine", 2, 10, warmup_from_zero=False)
    assert cos(0) == 0.5 and cos(2) == 1.0 and cos(10) == pytest.approx(0.0, abs=1e-12)
    assert cos(6) == pytest.approx(0.5)
    assert WarmupSchedule("constant", 0, 10)(0) == 1.0


def test_original_training_semantics_are_the_default(config, tmp_path):
    """The original drops the grounding of a whole batch with probability 0.1 and its warm-up's first
    step uses lr 0; per-sample dropping and a first step at lr/warmup are options."""
    from training.options import DEFAULTS
    from training.trainer import null_grounding_mask

    assert DEFAULTS.null_grounding_per == "batch" and DEFAULTS.warmup_from_zero is True
    gen = torch.Generator().manual_seed(0)
    batch = torch.stack([null_grounding_mask(4, 0.3, "batch", gen, torch.device("cpu")) for _ in range(400)])
    assert set(batch.sum(1).tolist()) == {0.0, 4.0}                   # all or nothing per batch
    assert 0.2 < (batch[:, 0] == 0).float().mean() < 0.4
    sample = torch.stack([null_grounding_mask(4, 0.3, "sample", gen, torch.device("cpu")) for _ in range(400)])
    assert {1.0, 2.0, 3.0} & set(sample.sum(1).tolist())               # mixed batches
    assert 0.25 < (sample == 0).float().mean() < 0.35

    for flag, moves in (("true", False), ("false", True)):             # warm-up of 2 steps, one step
        tr = make_trainer(config, tmp_path, f"w{flag}", "--total_iters", "1", "--warmup_steps", "2",
                          "--warmup_from_zero", flag)
        before = {n: p.detach().clone() for n, p in tr.named_params}
        tr.train()
        assert any(not torch.equal(before[n], p) for n, p in tr.named_params) == moves


def test_training_conditioning_is_the_pipelines(config, tmp_path):
    """The trainer's text cache is the pipeline's and its denoiser sees the pipeline's conditioning."""
    from training.data import grid_batch

    tr = make_trainer(config, tmp_path, "cond", "--total_iters", "1", "--workers", "0")
    batch = grid_batch(tr.dataset, 2, 0)
    captions = list(batch["caption"])
    context = tr.text_context(captions)
    assert set(captions) <= set(tr.pipeline._text_cache)
    tr.models.eval()
    with torch.no_grad():
        cond, _ = tr.pipeline.conditioning(batch["sem"], captions)
        x = torch.randn(tr.pipeline.latent_shape(2), generator=torch.Generator().manual_seed(0))
        t = torch.tensor([10, 500])
        ours = tr.denoiser(x, t, context, batch["sem"], torch.ones(2))
        theirs = tr.unet(x, t, cond.context, cond.grounding_tokens, cond.extra)
    torch.testing.assert_close(ours, theirs)


def test_ema_applied_swaps_in_and_restores():
    from training.ema import EMA

    layer = torch.nn.Linear(3, 2)
    ema = EMA(layer.named_parameters(), 0.5)
    trained = {n: p.detach().clone() for n, p in layer.named_parameters()}
    for s in ema.shadow.values():
        s.add_(1.0)
    with ema.applied():
        for n, p in layer.named_parameters():
            torch.testing.assert_close(p.detach(), trained[n] + 1.0)
    for n, p in layer.named_parameters():
        assert torch.equal(p.detach(), trained[n])


def test_min_snr_weighting_downweights_only_the_nearly_clean_timesteps(tmp_path):
    from ldm.diffusion.schedule import min_snr_weight
    from training.data import grid_batch

    ac = torch.tensor([0.999, 0.9, 5 / 6, 0.5, 0.01])  # SNR 999, 9, 5, 1, 0.0101
    torch.testing.assert_close(min_snr_weight(ac, 5.0), torch.tensor([5 / 999, 5 / 9, 1.0, 1.0, 1.0]))
    config = tiny_train_config(tmp_path, min_snr_gamma=5.0)
    tr = make_trainer(config, tmp_path, "snr", "--total_iters", "1", "--workers", "0")
    batch = grid_batch(tr.dataset, 4, 0)
    with torch.no_grad():
        weighted = [tr.compute_loss(batch, torch.Generator().manual_seed(s)) for s in range(32)]
        tr.opts.min_snr_gamma = 0.0
        plain = [tr.compute_loss(batch, torch.Generator().manual_seed(s)) for s in range(32)]
    # same draws per seed: never more than the plain loss, less where a nearly clean timestep was drawn
    assert all(torch.isfinite(w) and w <= p + 1e-6 for w, p in zip(weighted, plain))
    assert any(w < 0.8 * p for w, p in zip(weighted, plain)), (weighted, plain)
    from runtime.errors import UserError

    (tmp_path / "bad").mkdir()
    with pytest.raises(UserError, match="min_snr_gamma must be >= 0"):
        make_trainer(tiny_train_config(tmp_path / "bad", min_snr_gamma=-1.0), tmp_path, "bad")
