#!/usr/bin/env python
"""UNet forward speed: ours vs diffusers' GLIGEN UNet with identical shapes, measured in one run.

    python benchmarks/bench_unet.py                       # full DefFiller config, batch 2, 32x32, fp32
    python benchmarks/bench_unet.py --repeats 3 --config tests/assets/tiny.yaml

Both models get random weights of the same shapes, the same inputs, the same thread count; runs are
interleaved (ours, peer, ours, …) so machine noise hits both alike. Reports median seconds per
forward, the time ratio ours/diffusers (target <= 1.0), and achieved GFLOP/s (FLOPs counted by
torch.utils.flop_counter on our forward) as a fraction of a large fp32 GEMM's GFLOP/s on this machine.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from ldm.build import build_models
from ldm.config import load_config
from runtime.cli import add_config, add_threads, positive_int


def diffusers_peer(p: dict, in_channels: int) -> torch.nn.Module:
    """diffusers.UNet2DConditionModel(attention_type="gated") with our UNet's shapes."""
    from diffusers import UNet2DConditionModel

    mult, ch = list(p["channel_mult"]), p["model_channels"]
    levels = len(mult)
    attn_levels = [2 ** i in p["attention_resolutions"] for i in range(levels)]
    down = ["CrossAttnDownBlock2D" if a else "DownBlock2D" for a in attn_levels]
    up = ["CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attn_levels)]
    return UNet2DConditionModel(
        sample_size=p["image_size"], in_channels=in_channels, out_channels=p["out_channels"],
        down_block_types=tuple(down), up_block_types=tuple(up), block_out_channels=tuple(ch * m for m in mult),
        layers_per_block=p["num_res_blocks"], cross_attention_dim=p["context_dim"],
        attention_head_dim=p["num_heads"],  # SD-1.x naming quirk in diffusers: this is the head count
        attention_type="gated", norm_num_groups=32, transformer_layers_per_block=p.get("transformer_depth", 1))


def gemm_gflops(n: int = 2048, repeats: int = 5) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - t)
    return 2 * n ** 3 / min(times) / 1e9


def timed(fn, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config(parser, "configs/sd_saliency_900.yaml", help="model config (random weights)")
    parser.add_argument("--batch_size", "--batch", dest="batch", type=positive_int, default=2,
                        help="batch size (default: 2)")
    parser.add_argument("--repeats", type=positive_int, default=5, help="timed repeats (default: 5)")
    add_threads(parser, torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg = load_config(args.config)
    p = dict(cfg.model.params)
    ours = build_models(cfg, parts=("model",)).model.eval()
    extra_ch = ours.downsample_net.out_dim if ours.downsample_net is not None else 0
    peer = diffusers_peer(p, p["in_channels"] + extra_ch).eval()
    for m in (ours, peer):  # non-zero gates so the fusers are not skipped by any shortcut
        for name, prm in m.named_parameters():
            if "alpha" in name:
                prm.data.fill_(0.5)
    b, s, n_tok, dim = args.batch, p["image_size"], ours.position_net.num_tokens, p["context_dim"]
    x = torch.randn(b, p["in_channels"], s, s)
    t = torch.randint(0, 1000, (b,))
    ctx = torch.randn(b, 77, dim)
    tokens = torch.randn(b, n_tok, dim)
    in_dim = ours.position_net.in_dim
    sem = torch.zeros(b, in_dim, 256, 256)
    sem[:, 0] = 1
    with torch.no_grad():
        extra = ours.downsample_grounding(sem)
    x_peer = torch.cat([x, extra], 1)
    gligen = {"boxes": torch.rand(b, n_tok, 4), "positive_embeddings": torch.randn(b, n_tok, dim),
              "masks": torch.ones(b, n_tok)}

    def run_ours():
        with torch.no_grad():
            return ours(x, t, ctx, tokens, extra)

    def run_peer():
        with torch.no_grad():
            return peer(x_peer, t, ctx, cross_attention_kwargs={"gligen": dict(gligen)}).sample

    run_ours(), run_peer()  # warm-up
    with FlopCounterMode(display=False) as counter:
        run_ours()
    flops = counter.get_total_flops()
    t_ours, t_peer = [], []
    for _ in range(args.repeats):
        t_ours += timed(run_ours, 1)
        t_peer += timed(run_peer, 1)
    peak = gemm_gflops()
    mo, mp = statistics.median(t_ours), statistics.median(t_peer)
    n_ours = sum(q.numel() for q in ours.parameters()) / 1e6
    n_peer = sum(q.numel() for q in peer.parameters()) / 1e6
    print(f"config {args.config}, batch {b}, latent {s}x{s}, fp32, {args.threads} threads, {args.repeats} repeats")
    n_encoder = sum(q.numel() for q in ours.position_net.parameters()) / 1e6
    print(f"params: ours {n_ours:.1f} M (incl. mask encoder {n_encoder:.1f} M), "
          f"diffusers {n_peer:.1f} M")
    print(f"ours      {mo * 1e3:9.1f} ms/forward  (min {min(t_ours) * 1e3:.1f})")
    print(f"diffusers {mp * 1e3:9.1f} ms/forward  (min {min(t_peer) * 1e3:.1f})")
    print(f"ratio ours/diffusers = {mo / mp:.3f}  (target <= 1.0)")
    print(f"UNet forward {flops / 1e9:.1f} GFLOP -> ours {flops / mo / 1e9:.1f} GFLOP/s = "
          f"{flops / mo / 1e9 / peak:.1%} of fp32 GEMM peak {peak:.1f} GFLOP/s")


if __name__ == "__main__":
    main()
