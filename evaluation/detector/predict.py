"""Run a trained detector on images and write saliency maps (grey PNG, same size and name stem).

    python -m evaluation.detector.predict --ckpt OUTPUT/detector/detector.safetensors \
        --images PATH/SD-saliency-900 [--split DATA/splits/x.json --subset test] --out OUTPUT/maps
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from PIL import Image
from tqdm import tqdm

from dataset.files import IMAGE_EXTS, few, list_by_stem
from dataset.folders import image_folder
from dataset.io import image_size, write_png_atomic
from dataset.splits import pick_split_files
from runtime.cli import add_device
from runtime.device import pick_device
from runtime.errors import UserError, run_cli
from runtime.lock import locked
from runtime.safe_load import first_line

from .checks import MAX_BATCH_SIZE
from .data import load_image_array, to_tensor
from .model import build_model
from .runs import read_detector


class Detector:
    """A loaded detector (:func:`.runs.read_detector`: a weights file or run folder): ``detector(paths)`` yields
    float32 probability maps at each image's size."""

    def __init__(self, ckpt: str | Path, device: str | None = None, batch_size: int | None = None,
                 num_threads: int | None = None):
        ckpt = Path(ckpt)
        if batch_size is not None and not 1 <= batch_size <= MAX_BATCH_SIZE:
            raise UserError(f"--batch_size must be at least 1 and at most {MAX_BATCH_SIZE}, got {batch_size}")
        state = read_detector(ckpt)
        try:
            self.cfg = OmegaConf.create(state["config"])
            model_cfg = OmegaConf.merge(self.cfg.model, {"pretrained": False})  # weights come from ckpt
            self.model = build_model(model_cfg)
            self.model.load_state_dict(state["model"])
        except UserError:
            raise
        except Exception as exc:  # a foreign config or mismatched weights fail in many ways
            raise UserError(f"{ckpt}: detector weights do not fit its config ({first_line(exc)}); "
                            "retrain with python -m evaluation.detector.train") from None
        self.device = pick_device(device or self.cfg.train.get("device", "auto"))
        self.model.to(self.device).eval()
        self.size = int(self.cfg.data.image_size)
        self.in_chans = int(self.cfg.model.get("in_chans", 3))
        self.batch_size = int(batch_size or self.cfg.get("predict", {}).get("batch_size", 32))
        threads = num_threads or self.cfg.train.get("num_threads")
        if threads:
            torch.set_num_threads(int(threads))

    @torch.no_grad()
    def predict_paths(self, paths: Sequence[Path], progress: bool = True,
                      desc: str = "predict") -> Iterator[tuple[Path, np.ndarray]]:
        paths = list(paths)
        with tqdm(total=len(paths), desc=desc, disable=not progress, leave=False, dynamic_ncols=True) as bar:
            for i in range(0, len(paths), self.batch_size):
                chunk = paths[i:i + self.batch_size]
                sizes = []
                batch = []
                for p in chunk:
                    sizes.append(image_size(p)[::-1])  # (H, W)
                    batch.append(to_tensor(load_image_array(p, self.size, self.in_chans)))
                prob = torch.sigmoid(self.model(torch.stack(batch).to(self.device))).cpu()
                for p, hw, pr in zip(chunk, sizes, prob):
                    full = F.interpolate(pr[None], size=hw, mode="bilinear", align_corners=False)[0, 0]
                    yield p, full.numpy().astype(np.float32)
                bar.update(len(chunk))

    def __call__(self, paths: Sequence[Path], progress: bool = False) -> Iterator[np.ndarray]:
        for _, prob in self.predict_paths(paths, progress):
            yield prob


def to_png(prob: np.ndarray) -> Image.Image:
    return Image.fromarray(np.clip(np.rint(prob * 255.0), 0, 255).astype(np.uint8), "L")


def write_maps(detector: Detector, paths: Sequence[Path], out_dir: str | Path, progress: bool = True,
               log: Callable[[str], None] = print) -> Path:
    """Predict every image in ``paths`` and write ``out_dir/<stem>.png`` under the folder's lock."""
    out_dir = Path(out_dir)
    made = not out_dir.exists()
    try:
        with locked(out_dir, "choose another --out"):  # one writer per map folder
            return _write_maps(detector, paths, out_dir, progress, log)
    except BaseException:
        if made and out_dir.is_dir() and not any(out_dir.iterdir()):
            out_dir.rmdir()
        raise


def _refuse_stale_maps(out_dir: Path, paths: Sequence[Path]) -> None:
    """Maps in ``out_dir`` that this run does not write would mix with its own: refused, never deleted."""
    wanted = {f"{Path(p).stem}.png" for p in paths}
    stale = sorted(f.name for f in out_dir.iterdir() if f.suffix.lower() == ".png" and f.name not in wanted)
    if stale:
        raise UserError(f"{out_dir}: holds {len(stale)} map(s) this run does not write ({few(stale)}); they would "
                        "mix with the new ones: choose a fresh --out or remove them")


def _write_maps(detector: Detector, paths: Sequence[Path], out_dir: Path, progress: bool,
                log: Callable[[str], None]) -> Path:
    _refuse_stale_maps(out_dir, paths)
    written: list[Path] = []
    try:
        for path, prob in detector.predict_paths(paths, progress):
            target = out_dir / f"{Path(path).stem}.png"
            existed = target.exists()
            write_png_atomic(to_png(prob), target)
            if not existed:
                written.append(target)
    except BaseException:  # a bad image half-way: leave no partial set of new maps behind
        for target in written:
            target.unlink(missing_ok=True)
        raise
    log(f"wrote {len(paths)} map(s) to {out_dir}")
    return out_dir


def select_images(images: str | Path, stems: Sequence[str] | None = None) -> list[Path]:
    files = list_by_stem(image_folder(images), IMAGE_EXTS, "image", strict=False)
    if stems is None:
        return list(files.values())
    return list(pick_split_files(files, stems, image_folder(images), "image").values())


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m evaluation.detector.predict",
                                     description="Write saliency maps of a trained detector.")
    parser.add_argument("--ckpt", required=True,
                        help="detector.safetensors (or its run folder) written by evaluation.detector.train; a "
                             "legacy detector.pt is read weights-only")
    parser.add_argument("--images", required=True, help="image folder or paired dataset root")
    parser.add_argument("--out", required=True, help="output folder for <stem>.png maps")
    parser.add_argument("--split", default=None, help="split JSON: predict only its --subset stems")
    parser.add_argument("--subset", default="test", choices=("train", "test"), help="split part (default: test)")
    parser.add_argument("--batch_size", type=int, default=None,
                        help="images per batch (default: the checkpoint's)")
    add_device(parser, None, "auto")
    args = parser.parse_args(argv)
    stems = None
    if args.split:
        from dataset.splits import load_split
        stems = load_split(args.split)[args.subset]
    detector = Detector(args.ckpt, args.device, args.batch_size)
    write_maps(detector, select_images(args.images, stems), args.out)
    return 0


if __name__ == "__main__":
    run_cli(main)
