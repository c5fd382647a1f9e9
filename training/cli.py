"""Train DefFiller: ``python main.py --name exp`` (see ``python main.py --help``).

    python main.py --name demo --yaml_file configs/demo.yaml          # tiny CPU demo, no downloads
    python main.py --name exp --DATA_ROOT DATA/SD-saliency-900         # the paper's fine-tuning
    torchrun --nproc_per_node=4 main.py --name exp --precision bf16    # DDP (NCCL on GPUs, gloo on CPUs)

The run lives in OUTPUT_ROOT/name (checkpoints/, latest.json, samples/, tb/, metrics.jsonl,
config.yaml) and resumes from its latest checkpoint when started again; a second run into the same
folder while one is live is refused (runtime.lock). Input problems (missing
weights, dataset errors, a checkpoint of another architecture, a NaN loss, an unwritable or full
output folder) end with one line ``error: ...`` and exit status 2. SIGTERM / Ctrl-C finish the step,
save a checkpoint and exit with 128 + the signal number (143 / 130).
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

from runtime.errors import UserError, run_cli
from runtime.lock import locked

RUN_FIX = "choose another --name"


def main(argv: Optional[Sequence[str]] = None) -> int:
    from ldm.config import load_config
    from runtime import distributed as D
    from training.options import apply_overrides, parse_args, resolve_options

    cli = parse_args(argv)
    cfg = apply_overrides(load_config(cli.yaml_file), cli.set)
    opts = resolve_options(cli, cfg)
    info = D.init_distributed(opts.device)
    if opts.threads:
        import torch
        torch.set_num_threads(opts.threads)
    try:
        from training.trainer import Trainer, output_errors

        run_dir = Path(opts.OUTPUT_ROOT) / opts.name
        if info.is_main:
            with output_errors(run_dir):
                run_dir.mkdir(parents=True, exist_ok=True)
        with locked(run_dir, RUN_FIX, enabled=info.is_main):  # one writer per run folder
            trainer = Trainer(opts, cfg, info)
            trainer.train()
    except UserError as exc:
        if not info.is_main:  # every rank hits the same error; let rank 0 report it
            raise SystemExit(2) from exc
        raise
    finally:
        D.cleanup(info)
    # stopped by a signal after saving: 128 + signal (143 for SIGTERM), so a scheduler can tell a stop
    # from a finish; rerunning the same command resumes
    return 128 + trainer.stop_signal if trainer.stop_signal else 0


def entry_point() -> None:
    """``python main.py`` / the ``deffiller-train`` script: :func:`main` with one-line errors and exit codes."""
    run_cli(main)


if __name__ == "__main__":
    entry_point()
