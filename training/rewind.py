"""Going back in a run: ``python -m training.rewind RUN --to N`` makes checkpoint N the run's latest again.

The checkpoints after N move to ``RUN/checkpoints/after_N/`` (kept, never deleted), ``latest.json`` points at N
and ``metrics.jsonl`` is cut at N; the sample grids past N stay until the continued run writes its own. The run's
own training command then continues from N, for instance with ``--set train.grad_clip=1.0`` after a blow-up (the
change is recorded in ``config_changes.jsonl``). Any trainer's run folder (``main.py``, the mask producer, the
detector) can be rewound; a run that is training is refused.
"""
from __future__ import annotations

import argparse
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

from runtime.atomic import fsync_dir
from runtime.errors import UserError, run_cli
from runtime.lock import locked
from training.jsonl_log import JsonlLog
from training.run_folder import POINTER, complete_iterations, complete_state, link_latest, weights_name, write_pointer

_CHECKPOINT_FILE = re.compile(r"^(?:ckpt|state)_(\d{8,})\.\w+$")


@dataclass
class Rewound:
    iteration: int
    moved: list[int]         # the later checkpoints' iterations, moved aside
    aside: Optional[Path]    # where they went (None: there were none)


def rewind(run_dir: str | Path, iteration: int) -> Rewound:
    """Make the complete checkpoint of ``iteration`` the latest of ``run_dir``; later checkpoint files move aside."""
    run_dir = Path(run_dir)
    folder = run_dir / "checkpoints"
    done = complete_iterations(folder)
    if not done:
        raise UserError(f"{run_dir}: no complete checkpoint in it; give a run folder a trainer wrote "
                        "(OUTPUT_ROOT/<name>)")
    if iteration not in done:
        moved = sorted(str(p.parent.relative_to(run_dir)) for p in folder.glob(f"after_*/{weights_name(iteration)}"))
        where = f" (an earlier rewind moved it to {', '.join(moved)}: move its files back first)" if moved else ""
        raise UserError(f"{run_dir}: no complete checkpoint of iteration {iteration}{where}; it has {_listing(done)}")
    state = complete_state(folder, iteration)
    weights = folder / weights_name(iteration)
    trainer = _trainer_of(run_dir, state)
    later = sorted({int(m.group(1)) for p in folder.iterdir()
                    if (m := _CHECKPOINT_FILE.match(p.name)) and int(m.group(1)) > iteration})
    aside = None
    if later:  # first: killed before the pointer moves, a resume finds the pointed files gone and takes N anyway
        moving = [p for p in sorted(folder.iterdir())
                  if (m := _CHECKPOINT_FILE.match(p.name)) and int(m.group(1)) > iteration]
        aside = _free(folder / f"after_{iteration:08d}", [p.name for p in moving])
        aside.mkdir(exist_ok=True)
        for path in moving:
            os.replace(path, aside / path.name)
        fsync_dir(aside)
        fsync_dir(folder)
    write_pointer(run_dir, iteration, weights, state, trainer)
    link_latest(weights)
    JsonlLog(run_dir).truncate_after(iteration)
    return Rewound(iteration, later, aside)


def _listing(iterations: list[int]) -> str:
    shown = ", ".join(str(i) for i in iterations[-8:])
    noun = "checkpoint" if len(iterations) == 1 else "checkpoints"
    return f"{len(iterations)} {noun}: " + ("..., " if len(iterations) > 8 else "") + shown


def _free(path: Path, names: list[str]) -> Path:
    """``path``, or ``path_2``, ``path_3`` ... where one of ``names`` is already there (an earlier rewind to the same
    iteration); a folder without them is reused (the same rewind, killed midway and run again)."""
    n, candidate = 1, path
    while any((candidate / name).exists() for name in names):
        n += 1
        candidate = path.with_name(f"{path.name}_{n}")
    return candidate


def _trainer_of(run_dir: Path, state: Path) -> str:
    """The trainer named by the run's pointer, else by the checkpoint's state JSON, else ``main``."""
    for source in (run_dir / POINTER, state):
        if source.suffix != ".json":  # a legacy state_N.pt
            continue
        try:
            return str(json.loads(source.read_text(encoding="utf-8"))["trainer"])
        except (OSError, ValueError, KeyError, TypeError, UnicodeDecodeError):
            continue
    return "main"


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m training.rewind",
        description="Make an earlier checkpoint of a training run its latest again, so that the run's training "
                    "command continues from there. Later checkpoints are moved to checkpoints/after_N/, not "
                    "deleted; metrics.jsonl is cut at N.",
        epilog="example, after a blow-up that the trainer warned about:\n"
               "  python -m training.rewind OUTPUT/exp --to 3000\n"
               "  python main.py --name exp ... --set train.grad_clip=1.0     # the run's command, continued",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", type=Path, help="the run folder (OUTPUT_ROOT/<name>)")
    p.add_argument("--to", type=int, required=True, metavar="N", help="the iteration of the checkpoint to go back to")
    args = p.parse_args(argv)
    if not args.run.is_dir():
        raise UserError(f"{args.run}: no such run folder; give the folder a trainer wrote (OUTPUT_ROOT/<name>)")
    with locked(args.run, "stop the training that is writing it first"):
        done = rewind(args.run, args.to)
    moved = (f"; checkpoints {', '.join(map(str, done.moved))} moved to {done.aside}" if done.moved
             else "; no later checkpoints")
    print(f"{args.run}: latest is now iteration {done.iteration}{moved}; metrics.jsonl cut at {done.iteration}. "
          "Run its training command again to continue from there.")
    return 0


if __name__ == "__main__":
    run_cli(main)
