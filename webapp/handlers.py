"""What the page's buttons do: page inputs in, page outputs out; bad input becomes a message in the page.

Every handler is wrapped by :func:`guarded`: a :class:`UserError` is shown as its one-line message, any
other exception as a short "internal error" message (its traceback goes to the terminal), so one
failed request never takes the app down.
"""
from __future__ import annotations

import functools
import logging
import math
import re
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Optional

import gradio as gr
import torch

from dataset.files import IMAGES_DIR
from inference.generate import DEFAULT_STEPS, MODES, GenerationOptions, distilled_guidance_note
from runtime.errors import UserError
from webapp.canvas import editor_value, mask_from_editor, mask_from_upload, with_outline
from webapp.engine import Engine
from webapp.keep import KeptPairs

log = logging.getLogger("deffiller.app")
MODE_LABELS = {"generate": "generate a defect", "implant": "implant into a background image",
               "sdedit": "start from an image (SDEdit)"}
MODE_OF_LABEL = {v: k for k, v in MODE_LABELS.items()}
MAX_VARIANTS = 8
MAX_SEED = 2**63 - 1          # the Seed box takes any number; torch seeds must fit 64 bits (seed + variant)
MAX_STEPS = 100_000           # absurd values only: check_options refuses more than the checkpoint holds
MAX_PER_MASK = 100
MAX_NEW_MASKS = 1000
MAX_UPLOAD_BYTES = 20 * 2**20  # a mask or background image; the server refuses larger uploads too


def whole(value: Any, name: str, low: int, high: int) -> int:
    """A number the page sent as a whole number in [low, high]; NaN, inf, 1e30 or 2.5 is a one-line error."""
    if isinstance(value, int) and not isinstance(value, bool):
        x: float | int = value  # exact: seeds of infer.py's records are 64-bit integers
    else:
        try:
            x = float(value)
        except (TypeError, ValueError):
            raise UserError(f"{name} must be a whole number, got {value!r}") from None
        if not math.isfinite(x) or not x.is_integer():
            raise UserError(f"{name} must be a whole number from {low} to {high}, got {value!r}")
    if not low <= x <= high:
        raise UserError(f"{name} must be a whole number from {low} to {high}, got {value!r}")
    return int(x)


def finite(value: Any, name: str) -> float:
    """A number the page sent as a finite float; else a one-line error."""
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise UserError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(x):
        raise UserError(f"{name} must be a finite number, got {value!r}")
    return x


def upload(path: str | Path, what: str) -> Path:
    """An uploaded file's path, refused when larger than :data:`MAX_UPLOAD_BYTES`."""
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise UserError(f"{path.name}: cannot read the {what} ({exc.strerror}); upload it again") from None
    if size > MAX_UPLOAD_BYTES:
        raise UserError(f"{path.name}: the {what} is {size / 2**20:.0f} MB; upload one of at most "
                        f"{MAX_UPLOAD_BYTES // 2**20} MB")
    return path


def _message(exc: Exception) -> str:
    if isinstance(exc, UserError):
        # uploads arrive as /tmp/gradio/<hash>/<name>: the name is what the user knows
        return re.sub(r"\S*/gradio/[0-9a-f]+/", "", str(exc))
    log.exception("request failed")
    return (f"internal error ({type(exc).__name__}: {exc}); the app is still running, "
            "details are in its terminal")


def guarded(fn: Callable, keep_outputs: Optional[int] = None) -> Callable:
    """Show failures as a message in the page instead of a traceback; the app keeps serving.

    By default the message is a ``gr.Error`` (the request's outputs show an error badge until the next
    request). With ``keep_outputs=n`` (handlers that write into the mask canvas, which must stay usable)
    the ``n`` outputs keep their values and the message goes to one more output, a note beside them,
    which a successful request clears. The note is written when the request ends, so it is also the
    page's sign that the canvas takes input again (a toast shows while the request still runs).
    """
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            values = fn(*args, **kwargs)
        except gr.Error:
            raise
        except Exception as exc:  # UserError: bad input; anything else: a bug, reported the same way
            message = _message(exc)
            if keep_outputs is None:
                raise gr.Error(message, print_exception=False) from None
            return (*(gr.skip() for _ in range(keep_outputs)), f"**error:** {message}")
        if keep_outputs is None:
            return values
        return (*(values if isinstance(values, tuple) else (values,)), "")
    return wrapper


def _mode(label: str) -> str:
    mode = MODE_OF_LABEL.get(label, label)
    if mode not in MODES:
        raise UserError(f"unknown mode {label!r}")
    return mode


def _noted(engine: Engine, opts: GenerationOptions) -> str:
    """The distilled-model warning as a second paragraph of a status line, else nothing."""
    note = distilled_guidance_note(engine.pipe, opts.guidance_scale)
    return f"\n\n**Note:** {note}" if note else ""


class Page:
    """The handlers, bound to one engine and one kept-pairs folder."""

    def __init__(self, engine: Engine, kept: KeptPairs, batch_root: Path) -> None:
        self.engine, self.kept, self.batch_root = engine, kept, Path(batch_root)

    # -- mask sources ---------------------------------------------------------------------------
    def blank(self) -> dict:
        return editor_value(None, self.engine.size)

    def upload_mask(self, file: Any) -> tuple[dict, str]:
        if file is None:
            raise UserError("no file received; choose a mask PNG")
        path = upload(getattr(file, "name", file), "mask")
        mask = mask_from_upload(path, self.engine.size)
        return editor_value(mask, self.engine.size), f"upload {path.name}"

    def new_mask(self, category: str, seed: float) -> tuple[dict, str]:
        cat = self.engine.category(category or "")
        seed = whole(seed, "Seed", 0, MAX_SEED)
        mask = self.engine.new_mask(cat, seed)
        return editor_value(mask, self.engine.size), f"maskgen {self.engine.maskgen.path} seed {seed}"

    # -- generation -----------------------------------------------------------------------------
    def generate(self, editor: Optional[dict], origin: str, category: str, mode_label: str,
                 image_path: Optional[str], strength: float, sampler: str, steps: float, guidance: float,
                 seed: float, variants: float, progress: gr.Progress = gr.Progress()) -> tuple:
        engine = self.engine
        mask = mask_from_editor(editor, engine.size)
        cat = engine.category(category or "")
        mode = _mode(mode_label)
        opts = engine.options(sampler, whole(steps, "Steps", 1, MAX_STEPS), finite(guidance, "Guidance"), mode,
                              finite(strength, "Strength"))
        n = whole(variants, "Variants", 1, MAX_VARIANTS)
        seed = whole(seed, "Seed", 0, MAX_SEED - MAX_VARIANTS)
        background, source = None, None
        if mode != "generate":
            if not image_path:
                what = "a defect-free background" if mode == "implant" else "a start image"
                raise UserError(f"{MODE_LABELS[mode]} needs {what}: upload it under 'Image'")
            background, note = engine.background(upload(image_path, "image"))
            source = Path(image_path).name
            if note:
                gr.Warning(note)
        seeds = [seed + k for k in range(n)]
        progress(0, desc=f"generating {n} image(s): {sampler}, {opts.steps} steps")
        start = time.perf_counter()
        images = engine.generate(mask, cat, seeds, opts, background)
        seconds = time.perf_counter() - start
        shown = [(with_outline(img, mask), f"seed {s}") for img, s in zip(images, seeds)]
        records = [engine.record(origin or "canvas", cat, s, opts, source) for s in seeds]
        result = {"images": images.cpu().numpy(), "mask": mask, "records": records, "prefix": cat.prefix}
        timing = (f"{n} image(s) in {seconds:.2f} s ({sampler}, {opts.steps} steps"
                  f"{', ' + MODE_LABELS[mode] if mode != 'generate' else ''}); pick one and press Keep"
                  + _noted(engine, opts))
        return shown, timing, result, 0

    # -- kept pairs -----------------------------------------------------------------------------
    def keep(self, result: Optional[dict], selected: Optional[int]) -> tuple[list, str]:
        if not result:
            raise UserError("nothing to keep yet: press Generate first")
        index = whole(selected or 0, "the selected image", 0, MAX_VARIANTS)
        if index >= len(result["images"]):
            raise UserError("pick one of the generated images first")
        image = torch.from_numpy(result["images"][index])
        name = self.kept.add(result["prefix"], image, torch.from_numpy(result["mask"]), result["records"][index])
        return self.kept.items(), f"kept **{name}** in `{self.kept.root}`"

    def gallery(self) -> list:
        return self.kept.items()

    def zip(self) -> str:
        if not self.kept.items():
            raise UserError("nothing kept yet: generate, pick an image and press Keep")
        return str(self.kept.zip())

    # -- batch ----------------------------------------------------------------------------------
    def batch(self, mask_dir: str, n_new: float, name: str, per_mask: float, category_names: list,
              mode_label: str, image_path: Optional[str], background_dir: str, strength: float, sampler: str,
              steps: float, guidance: float, seed: float, progress: gr.Progress = gr.Progress()) -> tuple:
        engine = self.engine
        name = (name or "").strip()
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
            raise UserError("give the dataset a folder name (letters, digits, _ . -)")
        mode = _mode(mode_label)
        opts = engine.options(sampler, whole(steps, "Steps", 1, MAX_STEPS), finite(guidance, "Guidance"), mode,
                              finite(strength, "Strength"))
        seed = whole(seed, "Seed", 0, MAX_SEED)
        n_new = whole(n_new or 0, "new masks per category", 0, MAX_NEW_MASKS)
        per_mask = whole(per_mask, "images per mask", 1, MAX_PER_MASK)
        background = None
        if mode != "generate":
            background = Path(background_dir.strip()) if (background_dir or "").strip() else (
                upload(image_path, "image") if image_path else None)
            if background is None:
                raise UserError(f"{MODE_LABELS[mode]} needs a background image or folder: type a folder "
                                "or upload an image")
        out = self.batch_root / name
        if (mask_dir or "").strip():
            masks = Path(mask_dir.strip()).expanduser()
        elif n_new > 0:
            cats = [engine.category(c) for c in (category_names or [])] or list(engine.categories)
            progress(0, desc="drawing new masks")
            masks = engine.write_new_masks(Path(tempfile.mkdtemp(prefix="deffiller_masks_")), n_new, cats, seed)
        else:
            raise UserError("type a folder of mask PNGs, or ask for new masks from the mask producer")

        def report(done: int, total: int) -> None:
            progress((done, max(total, 1)), desc="generating pairs", unit="pairs")

        start = time.perf_counter()
        root = engine.dataset(masks, out, opts, per_mask, seed, background, report)
        seconds = time.perf_counter() - start
        count = len(list((root / IMAGES_DIR).glob("*.png")))
        preview = root / "preview.png"
        return (f"{count} pairs in `{root}` ({seconds:.1f} s)" + _noted(engine, opts),
                str(preview) if preview.is_file() else None)

    # -- settings -------------------------------------------------------------------------------
    def default_steps(self, sampler: str) -> int:
        """The checkpoint's recommended steps for its recommended sampler, else the sampler's default."""
        rec = self.engine.recommended
        if sampler == rec["sampler"] and rec["steps"] is not None:
            return int(rec["steps"])
        return DEFAULT_STEPS.get(sampler, 50)

    @staticmethod
    def image_visibility(mode_label: str) -> tuple:
        mode = MODE_OF_LABEL.get(mode_label, "generate")
        return gr.update(visible=mode != "generate"), gr.update(visible=mode == "sdedit")
