"""A local web page for DefFiller: draw or upload a defect mask, generate, keep the pairs.

    python app.py --ckpt OUTPUT/exp/checkpoints/latest.safetensors [--host 127.0.0.1 --port 7860]
        [--maskgen_ckpt OUTPUT/maskgen] [--out generation_samples/app]

Serves on 127.0.0.1 only unless --host names another interface. Kept pairs go to
``<out>/kept/{Source_Images,Ground_truth}/`` + ``generation.json`` (``infer.py``'s records); the
Batch tab writes ``<out>/<name>/`` exactly as ``infer.py`` does. Without --ckpt the CPU demo's
checkpoint is used when it exists.
"""
from __future__ import annotations

import argparse
import ipaddress
import logging
import os
from pathlib import Path
from typing import Optional

from runtime.cli import add_device
from runtime.errors import UserError, run_cli

DEMO_CKPT = Path("OUTPUT/demo/checkpoints/latest.safetensors")
KEPT = "kept"


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt", type=Path, default=None, help=f"DefFiller checkpoint (default: {DEMO_CKPT} if present)")
    p.add_argument("--host", default="127.0.0.1",
                   help="interface to serve on (default 127.0.0.1: this computer only; 0.0.0.0 serves every "
                        "interface, so anyone on the network can use the page)")
    p.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    p.add_argument("--maskgen_ckpt", type=Path, default=None,
                   help="mask producer checkpoint (file or maskgen.train run folder): enables 'new mask'")
    p.add_argument("--out", type=Path, default=Path("generation_samples/app"),
                   help="folder for kept pairs (<out>/kept) and batch datasets (<out>/<name>)")
    add_device(p)
    p.add_argument("--precision", choices=("fp32", "bf16", "fp16"), default="fp32",
                   help="fp32 (default); bf16 on GPUs and CPUs with AVX-512 BF16/AMX; fp16 on CUDA only")
    p.add_argument("--weights", choices=("auto", "ema", "raw"), default="auto",
                   help="EMA or trained weights; auto: EMA when the checkpoint has them")
    return p.parse_args(argv)


def resolve_ckpt(ckpt: Optional[Path], demo: Path = DEMO_CKPT) -> Path:
    """The checkpoint to serve: ``--ckpt``, else the CPU demo's when it exists."""
    if ckpt is not None:
        if not ckpt.is_file():
            raise UserError(f"--ckpt {ckpt}: file not found; pass a DefFiller checkpoint (.safetensors/.pth)")
        return ckpt
    if demo.is_file():
        print(f"no --ckpt given: serving the CPU demo checkpoint {demo}")
        return demo
    raise UserError(f"no --ckpt given and no demo checkpoint at {demo}; train it with `python main.py --name demo "
                    "--yaml_file configs/demo.yaml` (about 5 minutes on a CPU) or pass --ckpt PATH")


def check_host(host: str) -> None:
    """Refuse names that are not addresses; say so when the page is served beyond this computer."""
    if host == "localhost":
        return
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        raise UserError(f"--host {host!r} is not an IP address; use 127.0.0.1 (default) or e.g. 0.0.0.0") from None
    if not addr.is_loopback:
        print(f"warning: serving on {host}: other computers on the network can use this page")


def build_app(ckpt: Path, out: Path, maskgen_ckpt: Optional[Path] = None, device: str = "auto",
              precision: str = "fp32", weights: str = "auto"):
    """The page (a ``gr.Blocks``, queued) and the folders it may serve files from."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no telemetry calls from a local tool
    from webapp.engine import Engine
    from webapp.handlers import Page
    from webapp.keep import KeptPairs
    from webapp.layout import build

    engine = Engine(ckpt, device=device, precision=precision, weights=weights, maskgen_ckpt=maskgen_ckpt)
    kept = KeptPairs(out / KEPT, engine.keep_settings())
    page = Page(engine, kept, out)
    demo = build(page)
    demo.deffiller_page = page  # for in-process callers (tests, benchmarks.bench_latency)
    demo.queue(default_concurrency_limit=1)
    return demo


def main(argv: Optional[list[str]] = None) -> int:
    args = parse_args(argv)
    check_host(args.host)
    if not 0 < args.port < 65536:
        raise UserError(f"--port {args.port}: use a port between 1 and 65535")
    ckpt = resolve_ckpt(args.ckpt)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # gradio's own start-up probes
    demo = build_app(ckpt, args.out, args.maskgen_ckpt, args.device, args.precision, args.weights)
    from webapp.handlers import MAX_UPLOAD_BYTES

    try:
        demo.launch(server_name=args.host, server_port=args.port, allowed_paths=[str(args.out.resolve())],
                    share=False, show_error=False, max_file_size=MAX_UPLOAD_BYTES)
    except OSError as exc:
        raise UserError(f"cannot serve on {args.host}:{args.port} ({exc}); choose another --port") from None
    return 0



def entry_point() -> None:
    """``python app.py`` / the ``deffiller-app`` script: :func:`main` with one-line errors and exit codes."""
    run_cli(main)


if __name__ == "__main__":
    entry_point()
