"""A main.py run folder seen from outside: the checkpoint its ``latest.json`` points at, the process
training it right now (read from /proc), and main.py's config and option checks without training."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Optional


def latest_weights(run_dir: Path) -> Optional[tuple[Path, int]]:
    """(weights file, iteration) a main.py run's ``latest.json`` points at, or None before its first checkpoint."""
    pointer = Path(run_dir) / "latest.json"
    try:
        data = json.loads(pointer.read_text())
        return Path(run_dir) / data["weights"], int(data["iteration"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def resolved_config(config: str, overrides: list[str]) -> dict[str, Any]:
    """The config main.py would resolve from ``config`` and ``--set`` overrides (validated), as plain containers."""
    from ldm.config import load_config
    from training.options import apply_overrides

    cfg = apply_overrides(load_config(config), overrides, flag=f"--set (from {config})")
    from omegaconf import OmegaConf

    return OmegaConf.to_container(cfg, resolve=True)


def check_main_options(argv: list[str]) -> Any:
    """main.py's own option parsing and checks on ``argv`` (no training); returns the resolved options."""
    from ldm.config import load_config
    from training.options import apply_overrides, parse_args, resolve_options

    cli = parse_args(argv)
    cfg = apply_overrides(load_config(cli.yaml_file), cli.set)
    return resolve_options(cli, cfg)


def running_trainer(run_dir: Path) -> Optional[str]:
    """``"PID: command"`` of another process running ``main.py`` on ``run_dir`` (read from /proc), else None."""
    run_dir = Path(run_dir).resolve()
    proc = Path("/proc")
    if not proc.is_dir():
        return None
    for entry in proc.iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            args = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
            cwd = Path(os.readlink(entry / "cwd"))
        except OSError:
            continue
        if not any(a.endswith("main.py") for a in args):
            continue
        flags = dict(zip(args, args[1:]))
        name = flags.get("--name", "sd")
        root = flags.get("--output_root", flags.get("--OUTPUT_ROOT", "OUTPUT"))
        if name == run_dir.name and ((cwd / root).resolve() == run_dir.parent):
            return f"{entry.name}: {' '.join(a for a in args if a)}"
    return None
