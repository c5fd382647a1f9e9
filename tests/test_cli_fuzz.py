"""Every command fed a zoo of bad files where it reads images, checkpoints or configs: exit status 2,
exactly one ``error:`` line naming the file, no traceback, no file left in the output folder.

Commands run in-process (their ``main`` inside ``run_cli``); the zoo and the good inputs are built
once per module.
"""
from __future__ import annotations

import io
import shutil
import struct
import sys
import zlib
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch
from PIL import Image

from runtime.errors import run_cli

IMAGE_KINDS = ("truncated", "empty", "text", "huge", "loop")
CKPT_KINDS = ("truncated", "empty", "text", "loop", "image")
CONFIG_KINDS = ("empty", "text", "truncated", "binary", "loop")


def _png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` (Pillow checks the size when opening)."""
    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b"")


def _noise_png(size: int = 32) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (size, size), np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def plant(kind: str, dest: Path) -> Path:
    """Write the zoo file ``kind`` at ``dest`` (replacing what is there)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.is_symlink() or dest.exists():
        dest.unlink()
    if kind == "loop":
        dest.symlink_to(dest.name)
        return dest
    if dest.suffix in (".pt", ".bin", ".pth", ".safetensors") and kind == "truncated":
        buf = io.BytesIO()
        torch.save({"model": {"w": torch.zeros(64)}}, buf)
        data = buf.getvalue()[:200]
    else:
        png = _noise_png()
        data = {"truncated": png[: len(png) // 2], "empty": b"", "text": b"this is not an image\n",
                "huge": _png_header(12000, 10000), "image": png,
                "binary": png, }.get(kind)
        if kind == "truncated" and dest.suffix in (".yaml", ".yml"):
            data = b"data:\n  image_size: [32, \n  name: 'unterminated\n"
        if kind == "text" and dest.suffix in (".yaml", ".yml"):
            data = b"just some words, not a mapping\n"
    dest.write_bytes(data)
    return dest


@pytest.fixture(scope="module")
def good(tmp_path_factory) -> dict[str, Path]:
    """Valid inputs every case starts from (copied before a zoo file is planted)."""
    from dataset.procedural import write_procedural_dataset
    from evaluation.detector.model import build_model
    from evaluation.detector.runs import write_final
    from evaluation.detector.train import DEFAULT_CONFIG
    from runtime.configs import load_config, to_plain
    from tools.tiny_model import make_tiny_checkpoint

    root = tmp_path_factory.mktemp("good")
    pairs = root / "pairs"
    write_procedural_dataset(pairs, 2, size=32)
    det_cfg = load_config(DEFAULT_CONFIG, DEFAULT_CONFIG, ["data.image_size=32", "train.device=cpu"])
    write_final(root / "det.safetensors", build_model(det_cfg.model).state_dict(), to_plain(det_cfg), {})
    gen_masks = root / "gen_masks"
    gen_masks.mkdir()
    for i, src in enumerate(sorted((pairs / "Ground_truth").glob("*.png"))):
        shutil.copy(src, gen_masks / f"{src.stem.split('_')[0]}_gen_{i + 1:04d}.png")
    maskgen_cfg = root / "maskgen_tiny.yaml"
    maskgen_cfg.write_text("data: {image_size: 16}\nmodel: {patch_size: 1, base_channels: 8, channel_mult: [1, 2], "
                           "num_res_blocks: 1, attention_levels: [], groups: 4}\ntrain: {epochs: 1, batch_size: 6}\n")
    from omegaconf import OmegaConf
    from train_helpers import TINY, TRAIN_TINY

    train_cfg = root / "train_tiny.yaml"  # trains from scratch: no release file to write
    OmegaConf.save(OmegaConf.merge(OmegaConf.load(TINY), TRAIN_TINY, {"train": {"ckpt": "none"}}), train_cfg)
    return {"pairs": pairs, "det": root / "det.safetensors", "tiny": make_tiny_checkpoint(root / "tiny.safetensors"),
            "gen_masks": gen_masks, "maskgen_cfg": maskgen_cfg, "train_cfg": train_cfg}


class TinyExtractor:
    name = "fuzz-tiny"

    def __init__(self, *args, **kwargs):
        pass

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return images.float().mean(dim=(2, 3))


def _cli(name: str) -> Callable:
    import importlib

    if name == "tools.check_checkpoint":
        mod = importlib.import_module("tools.check_checkpoint")

        def call(argv):
            old = sys.argv
            sys.argv = ["check_checkpoint.py", *argv]
            try:
                return mod.main()
            finally:
                sys.argv = old
        return call
    return importlib.import_module(name).main


def _dataset_copy(good, tmp: Path, kind: str, sub: str = "Source_Images") -> tuple[Path, Path]:
    """The good paired dataset with the zoo file as ``In_9.png`` (and a good counterpart)."""
    root = tmp / "data"
    shutil.copytree(good["pairs"], root)
    other = "Ground_truth" if sub == "Source_Images" else "Source_Images"
    shutil.copy(next((root / other).glob("In_*.png")), root / other / "In_9.png")
    return root, plant(kind, root / sub / "In_9.png")


def _mask_copy(good, tmp: Path, kind: str, keep: int | None = None) -> tuple[Path, Path]:
    """The good masks (the first ``keep`` of them) with the zoo file as ``In_9.png``."""
    folder = tmp / "masks"
    folder.mkdir()
    for src in sorted((good["pairs"] / "Ground_truth").glob("*.png"))[:keep]:
        shutil.copy(src, folder / src.name)
    return folder, plant(kind, folder / "In_9.png")


def image_case(cli: str, good, tmp: Path, kind: str, monkeypatch) -> tuple[str, list[str], Path]:
    """(module, argv, bad file) for a command reading a folder that holds the zoo file."""
    out = tmp / "out"
    if cli == "infer":
        masks, bad = _mask_copy(good, tmp, kind, keep=1)
        return cli, ["--ckpt", str(good["tiny"]), "--mask_dir", str(masks), "--folder", str(out),
                     "--save_folder_name", "s", "--steps", "1", "--device", "cpu"], bad
    if cli == "main":
        root, bad = _dataset_copy(good, tmp, kind)
        return cli, ["--yaml_file", str(good["train_cfg"]), "--OUTPUT_ROOT", str(out), "--name", "r",
                     "--DATA_ROOT", str(root), "--total_iters", "1", "--threads", "1", "--trainable", "all"], bad
    if cli == "evaluation.detector.train":
        root, bad = _dataset_copy(good, tmp, kind)
        return cli, ["--data_root", str(root), "--out", str(out), "--split", str(tmp / "split.json"),
                     "--ratio", "1:0", "--no_progress", "--set", "train.epochs=1", "data.image_size=32",
                     "train.device=cpu"], bad  # every pair in the training set, so every image is read
    if cli == "evaluation.detector.predict":
        root, bad = _dataset_copy(good, tmp, kind)
        return cli, ["--ckpt", str(good["det"]), "--images", str(root), "--out", str(out), "--device", "cpu"], bad
    if cli == "evaluation.sample_filter":
        root, bad = _dataset_copy(good, tmp, kind)
        return cli, ["--ckpt", str(good["det"]), "--generated", str(root), "--out", str(out), "--device", "cpu"], bad
    if cli == "evaluation.fid":
        import evaluation.fid as fid

        monkeypatch.setattr(fid, "InceptionFeatures", TinyExtractor)
        root, bad = _dataset_copy(good, tmp, kind)
        return cli, ["--real", str(root), "--fake", str(good["pairs"]), "--no_cache", "--out", str(out / "fid")], bad
    if cli == "evaluation.sod_eval":
        maps, bad = _mask_copy(good, tmp, kind)
        root, _ = _dataset_copy(good, tmp / "gt", "image")
        return cli, ["--pred", str(maps), "--gt", str(root), "--out", str(out / "sod")], bad
    if cli == "evaluation.mask_adherence":
        root, bad = _dataset_copy(good, tmp, kind)
        return cli, ["--generated", str(root), "--out", str(out / "r.json")], bad
    if cli == "evaluation.resolution_ceiling":
        root, bad = _dataset_copy(good, tmp, kind)
        return cli, ["--real", str(root), "--sizes", "16", "--out", str(out / "r.json")], bad
    if cli == "evaluation.protocols":
        root, bad = _dataset_copy(good, tmp, kind)
        cfg = tmp / "proto.yaml"
        cfg.write_text(f"protocol: substitution\ndata_root: {root}\nratio: '2:1'\nseed: 0\n"
                       f"split: {tmp / 'split.json'}\nout: {out}\ndetector_overrides: [train.epochs=1, "
                       "data.image_size=32, train.device=cpu]\nsettings:\n  - name: real\n    real: true\n")
        return cli, ["run", "--config", str(cfg), "--no_progress"], bad
    if cli == "maskgen.train":
        masks, bad = _mask_copy(good, tmp, kind)
        return cli, ["--data_root", str(masks), "--out", str(out), "--config", str(good["maskgen_cfg"]),
                     "--no_progress"], bad
    if cli == "maskgen.report":
        masks, bad = _mask_copy(good, tmp, kind)
        return cli, ["--real", str(masks), "--generated", str(good["gen_masks"]), "--out", str(out), "--no_fid"], bad
    raise AssertionError(cli)


def ckpt_case(cli: str, good, tmp: Path, kind: str, monkeypatch) -> tuple[str, list[str], Path]:
    out = tmp / "out"
    bad = plant(kind, tmp / "bad.pt")
    if cli == "infer":
        masks, _ = _mask_copy(good, tmp, "image", keep=1)
        return cli, ["--ckpt", str(bad), "--mask_dir", str(masks), "--folder", str(out), "--save_folder_name",
                     "s", "--steps", "2", "--device", "cpu"], bad
    if cli == "main":
        return cli, ["--yaml_file", str(good["train_cfg"]), "--OUTPUT_ROOT", str(out), "--name", "r",
                     "--ckpt", str(bad), "--total_iters", "1", "--threads", "1"], bad
    if cli == "tools.check_checkpoint":
        return cli, [str(bad)], bad
    if cli == "evaluation.detector.predict":
        return cli, ["--ckpt", str(bad), "--images", str(good["pairs"]), "--out", str(out)], bad
    if cli == "evaluation.sample_filter":
        return cli, ["--ckpt", str(bad), "--generated", str(good["pairs"]), "--out", str(out)], bad
    if cli == "evaluation.detector.train":
        out.mkdir()
        bad = plant(kind, out / "last.pt")
        return cli, ["--data_root", str(good["pairs"]), "--out", str(out), "--split", str(tmp / "split.json"),
                     "--ratio", "2:1", "--resume", "--no_progress", "--set", "train.epochs=1",
                     "data.image_size=32", "train.device=cpu"], bad
    if cli == "evaluation.fid":
        return cli, ["--real", str(good["pairs"]), "--fake", str(good["pairs"]), "--inception", str(bad),
                     "--no_cache"], bad
    if cli == "maskgen.sample":
        return cli, ["--ckpt", str(bad), "--out", str(out), "--no_progress"], bad
    if cli == "maskgen.train":
        bad = plant(kind, out / "checkpoints" / "last.pt")
        return cli, ["--data_root", str(good["pairs"]), "--out", str(out), "--config", str(good["maskgen_cfg"]),
                     "--no_progress"], bad
    raise AssertionError(cli)


def config_case(cli: str, good, tmp: Path, kind: str, monkeypatch) -> tuple[str, list[str], Path]:
    out = tmp / "out"
    bad = plant(kind, tmp / "bad.yaml")
    empty = tmp / "nodata"
    empty.mkdir()
    if cli == "main":
        return cli, ["--yaml_file", str(bad), "--OUTPUT_ROOT", str(out), "--name", "r", "--DATA_ROOT", str(empty),
                     "--ckpt", "none"], bad
    if cli == "infer":
        return cli, ["--ckpt", str(good["tiny"]), "--config", str(bad), "--mask_dir", str(empty), "--folder",
                     str(out), "--device", "cpu"], bad
    if cli == "process_json":
        return cli, ["--data_root", str(empty), "--yaml_file", str(bad), "--output", str(out / "c.json")], bad
    if cli == "tools.check_checkpoint":
        return cli, [str(good["tiny"]), "--config", str(bad)], bad
    if cli == "evaluation.detector.train":
        return cli, ["--data_root", str(empty), "--out", str(out), "--config", str(bad)], bad
    if cli == "evaluation.protocols":
        return cli, ["run", "--config", str(bad)], bad
    if cli == "evaluation.guidance_sweep":
        return cli, ["--config", str(bad), "--set", f"out={out}"], bad
    if cli == "evaluation.fid":
        return cli, ["--real", str(good["pairs"]), "--fake", str(good["pairs"]), "--categories", str(bad)], bad
    if cli == "maskgen.train":
        return cli, ["--data_root", str(empty), "--out", str(out), "--config", str(bad)], bad
    if cli == "maskgen.report":
        return cli, ["--real", str(empty), "--generated", str(empty), "--out", str(out), "--config", str(bad)], bad
    raise AssertionError(cli)


def _params(clis: list[str], kinds: tuple[str, ...]) -> list:
    return [pytest.param(cli, kind, id=f"{cli}-{kind}") for cli in clis for kind in kinds]


IMAGE_CLIS = ["infer", "main", "evaluation.detector.train", "evaluation.detector.predict",
              "evaluation.sample_filter", "evaluation.fid", "evaluation.sod_eval", "evaluation.mask_adherence",
              "evaluation.resolution_ceiling", "evaluation.protocols", "maskgen.train", "maskgen.report"]
CKPT_CLIS = ["infer", "main", "tools.check_checkpoint", "evaluation.detector.predict", "evaluation.sample_filter",
             "evaluation.detector.train", "evaluation.fid", "maskgen.sample", "maskgen.train"]
CONFIG_CLIS = ["main", "infer", "process_json", "tools.check_checkpoint", "evaluation.detector.train",
               "evaluation.protocols", "evaluation.guidance_sweep", "evaluation.fid", "maskgen.train",
               "maskgen.report"]


def _run(case, cli, good, tmp_path, kind, monkeypatch, capsys) -> None:
    module, argv, bad = case(cli, good, tmp_path, kind, monkeypatch)
    monkeypatch.chdir(tmp_path)
    before = {p for p in tmp_path.rglob("*")} if (tmp_path / "out").exists() else set()
    main = _cli(module)
    capsys.readouterr()
    with pytest.raises(SystemExit) as code:
        run_cli(lambda: main(argv))
    err = capsys.readouterr().err
    lines = [x for x in err.replace("\r", "\n").splitlines() if x.startswith("error:")]
    assert code.value.code == 2, err[-2000:]
    assert "Traceback" not in err and len(lines) == 1, err[-2000:]
    assert bad.name in lines[0], lines[0]
    out = tmp_path / "out"
    left = [p for p in out.rglob("*") if not p.is_dir() and p not in before] if out.exists() else []
    assert not left, left


@pytest.mark.parametrize("cli,kind", _params(IMAGE_CLIS, IMAGE_KINDS))
def test_bad_image(cli, kind, good, tmp_path, monkeypatch, capsys):
    _run(image_case, cli, good, tmp_path, kind, monkeypatch, capsys)


@pytest.mark.parametrize("cli,kind", _params(CKPT_CLIS, CKPT_KINDS))
def test_bad_checkpoint(cli, kind, good, tmp_path, monkeypatch, capsys):
    _run(ckpt_case, cli, good, tmp_path, kind, monkeypatch, capsys)


@pytest.mark.parametrize("cli,kind", _params(CONFIG_CLIS, CONFIG_KINDS))
def test_bad_config(cli, kind, good, tmp_path, monkeypatch, capsys):
    _run(config_case, cli, good, tmp_path, kind, monkeypatch, capsys)


@pytest.mark.parametrize("side", [(12000, 10000), (20000, 20000)], ids=["warning-size", "error-size"])
@pytest.mark.parametrize("reader", ["read_image", "read_mask", "image_size", "find_pairs", "list_by_stem+fid"])
def test_every_image_reader_refuses_a_decompression_bomb(tmp_path, side, reader):
    """Above Pillow's MAX_IMAGE_PIXELS it warns, above twice that it raises: both are one line."""
    from dataset import io
    from runtime.errors import UserError

    bomb = tmp_path / "Source_Images" / "In_1.png"
    bomb.parent.mkdir()
    bomb.write_bytes(_png_header(*side))
    (tmp_path / "Ground_truth").mkdir()
    (tmp_path / "Ground_truth" / "In_1.png").write_bytes(_noise_png())
    with pytest.raises(UserError, match=r"In_1.png: image too large \([\d,]+ pixels, above Pillow's "
                                        r"decompression-bomb limit"):
        if reader == "find_pairs":
            from dataset.pairs import find_pairs
            find_pairs(tmp_path)
        elif reader == "list_by_stem+fid":
            from metrics import fid
            fid.folder_features(tmp_path, TinyExtractor(), None, progress=False, log=lambda m: None)
        else:
            getattr(io, reader)(bomb)
