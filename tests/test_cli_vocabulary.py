"""Every command speaks one flag vocabulary: snake_case, a help text on every flag, and the shared
concepts (config, data root, output, device, seed, guidance, threads, categories) under the same names
everywhere, checked on the option strings themselves (a ``dest=`` rename hides nothing); ``--device`` has one
help text and ``--threads`` refuses negatives."""
from __future__ import annotations

import argparse
import importlib
import importlib.util
import re
import sys
from pathlib import Path

import pytest

from runtime.cli import DEVICE_HELP

REPO = Path(__file__).resolve().parents[1]

#: module name (importable) or repo-relative script path -> how its main() is called
COMMANDS = [
    "main", "infer", "process_json", "app",
    "evaluation.fid", "evaluation.sod_eval", "evaluation.detector.train", "evaluation.detector.predict",
    "evaluation.protocols", "evaluation.sample_filter", "evaluation.guidance_sweep", "evaluation.mask_adherence",
    "evaluation.resolution_ceiling", "evaluation.study", "training.upscaler",
    "maskgen.train", "maskgen.sample", "maskgen.calibrate", "maskgen.report",
    "tools/check_checkpoint.py", "tools/check_fixture.py", "tools/gpu_check.py",
    "benchmarks/bench_infer.py", "benchmarks/bench_grids.py", "benchmarks/bench_infer_fullsize.py",
    "benchmarks/bench_train.py", "benchmarks/bench_unet.py", "benchmarks/bench_upscaler.py",
]

#: the original DefFiller/GLIGEN spellings, kept as aliases (never the canonical, first name)
ALIASES = {"--yaml_file", "--DATA_ROOT", "--OUTPUT_ROOT", "--guidance", "--batch"}

#: concept (argparse dest) -> its one canonical flag
CANONICAL = {"config": "--config", "data_root": "--data_root", "device": "--device", "seed": "--seed",
             "guidance_scale": "--guidance_scale", "threads": "--threads"}

#: every spelling of a shared concept -> its canonical flag; keyed on option strings, so that a ``dest=`` rename
#: (``dest="guidance"``, ``dest="yaml_file"``) cannot hide a flag from the checks
SPELLINGS = {"--config": "--config", "--yaml_file": "--config", "--data_root": "--data_root",
             "--DATA_ROOT": "--data_root", "--device": "--device", "--seed": "--seed",
             "--guidance_scale": "--guidance_scale", "--guidance": "--guidance_scale", "--threads": "--threads",
             "--categories": "--categories"}

#: (parser prog, flag): an earlier spelling a command keeps as an alias of another concept's flag
KEPT = {("python -m maskgen.report", "--config"): "maskgen.report's categories YAML was --config before --categories"}

#: commands whose --device keeps a help text of its own, and why
DEVICE_OWN_HELP = {"gpu_check.py": "a GPU check: cuda, cuda:N or cpu, no auto"}

SNAKE = re.compile(r"^--[a-z][a-z0-9_]*$")


class _Captured(Exception):
    def __init__(self, parser: argparse.ArgumentParser) -> None:
        super().__init__()
        self.parser = parser


def _load(command: str):
    if command.endswith(".py"):
        path = REPO / command
        spec = importlib.util.spec_from_file_location(f"_cli_{path.stem}", path)
        module = importlib.util.module_from_spec(spec)
        sys.path.insert(0, str(path.parent))
        try:
            spec.loader.exec_module(module)
        finally:
            sys.path.remove(str(path.parent))
        return module
    return importlib.import_module(command)


def _parser(command: str, monkeypatch: pytest.MonkeyPatch) -> argparse.ArgumentParser:
    """The top-level parser ``command``'s main() builds (captured at its first parse call)."""
    module = _load(command)

    def capture(self, *args, **kwargs):
        raise _Captured(self)

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", capture)
    monkeypatch.setattr(argparse.ArgumentParser, "parse_known_args", capture)
    monkeypatch.setattr(sys, "argv", [command, "--help"])
    entry = getattr(module, "main")
    with pytest.raises(_Captured) as caught:
        try:
            entry(["--help"])
        except TypeError as exc:  # a main() that reads sys.argv itself
            if "positional argument" not in str(exc):
                raise
            entry()
    return caught.value.parser


def _actions(parser: argparse.ArgumentParser):
    """(parser prog, action) for every action, sub-commands included."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from _actions(sub)
        else:
            yield parser.prog, action


@pytest.mark.parametrize("command", COMMANDS)
def test_flags_are_snake_case_with_help_and_canonical_names(command: str, monkeypatch: pytest.MonkeyPatch) -> None:
    problems = []
    for prog, action in _actions(_parser(command, monkeypatch)):
        if isinstance(action, argparse._HelpAction) or not action.option_strings:
            continue
        first, names = action.option_strings[0], action.option_strings
        if not SNAKE.match(first):
            problems.append(f"{prog}: {first} is not a snake_case flag")
        for alias in names[1:]:
            if not SNAKE.match(alias) and alias not in ALIASES:
                problems.append(f"{prog}: alias {alias} is neither snake_case nor an original spelling")
        if first in ALIASES:
            problems.append(f"{prog}: {first} is an alias; the canonical name comes first")
        if action.help is None or (action.help != argparse.SUPPRESS and not action.help.strip()):
            problems.append(f"{prog}: {first} has no help text")
        canonical = CANONICAL.get(action.dest)
        if canonical and canonical not in names:
            problems.append(f"{prog}: {first} holds {action.dest!r} but is not spelled {canonical}")
        if action.dest == "device" and action.default not in ("auto", None):
            problems.append(f"{prog}: --device defaults to {action.default!r}, not auto")
        for name in names:
            canonical = SPELLINGS.get(name)
            if canonical and first != canonical and (prog, name) not in KEPT:
                problems.append(f"{prog}: {name} is spelled {first} first, not {canonical}")
        if "--device" in names and not (action.help or "").startswith(DEVICE_HELP) and prog not in DEVICE_OWN_HELP:
            problems.append(f"{prog}: --device has its own help text (use runtime.cli.add_device)")
        if "--threads" in names:
            try:
                (action.type or str)("-1")
            except (argparse.ArgumentTypeError, ValueError, TypeError):
                pass
            else:
                problems.append(f"{prog}: --threads accepts -1 (use runtime.cli.add_threads)")
        if "--set" in names and not isinstance(action, argparse._ExtendAction):
            problems.append(f"{prog}: a repeated --set replaces the earlier ones (use runtime.options.add_set_argument)")
    assert not problems, "\n".join(problems)


def test_detector_train_takes_device_into_its_config(tmp_path, monkeypatch):
    """``evaluation.detector.train --device`` becomes the config's ``train.device`` (the study's override)."""
    from evaluation.detector import train

    seen = {}

    def stop(cfg, *args, **kwargs):
        seen["device"] = cfg.train.device
        raise _Captured(None)

    monkeypatch.setattr(train, "check_detector_config", stop)
    with pytest.raises(_Captured):
        train.main(["--data_root", str(tmp_path), "--out", str(tmp_path / "o"), "--device", "cpu"])
    assert seen["device"] == "cpu"


def test_infer_device_is_the_shared_flag_and_takes_this_ranks_gpu(monkeypatch):
    """infer.py's ``--device``: the shared help, default auto, and under torchrun the rank's local GPU."""
    from inference import cli

    device = next(a for a in _parser("infer", monkeypatch)._actions if "--device" in a.option_strings)
    assert device.help.startswith(DEVICE_HELP) and "torchrun" in device.help and device.default == "auto"
    assert not hasattr(cli, "setup_distributed")  # one torchrun set-up: runtime.distributed.init_distributed
