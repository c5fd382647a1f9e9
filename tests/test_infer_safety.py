"""infer.py against careless and concurrent use: locked folders, strict resume, one-line errors."""
import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import dataset.files
import dataset.pairs
import infer
import inference.jobs
from dataset.categories import DEFAULT_CATEGORIES
from inference.jobs import build_jobs, list_masks
from inference.writer import PairedWriter
from runtime.errors import UserError
from runtime.lock import LOCK_NAME, FolderLock
from tools.tiny_model import make_tiny_checkpoint, write_masks

NAMES = ["In_1", "Sc_2"]
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("infer_safety")
    ckpt = make_tiny_checkpoint(root / "tiny.safetensors")
    masks = root / "masks"
    write_masks(masks, NAMES)
    return ckpt, masks


def args(ckpt, masks, folder, *extra, name="s"):
    return ["--ckpt", str(ckpt), "--mask_dir", str(masks), "--folder", str(folder), "--save_folder_name", name,
            "--steps", "1", "--sampler", "ddim", "--batch_size", "2", "--device", "cpu", *map(str, extra)]


def listing(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")) if folder.exists() else []


@pytest.fixture(scope="module")
def done(tiny, tmp_path_factory):
    """One finished run that the refusal tests try to extend."""
    ckpt, masks = tiny
    folder = tmp_path_factory.mktemp("done")
    assert infer.main(args(ckpt, masks, folder)) == 0
    return folder / "s"


def test_second_writer_refused_and_stale_lock_taken_over(tiny, tmp_path):
    ckpt, masks = tiny
    out = tmp_path / "s"
    out.mkdir()
    holder = subprocess.Popen(  # another process writing into the folder
        [sys.executable, "-c", "import sys, time; from runtime.lock import FolderLock; "
         "FolderLock(sys.argv[1]).acquire(); print('held', flush=True); time.sleep(600)", str(out)],
        cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(UserError, match=rf"being written by another run \(pid {holder.pid} on .*{LOCK_NAME}"):
            infer.main(args(ckpt, masks, tmp_path))
        assert listing(out) == [LOCK_NAME]
    finally:
        holder.kill()  # SIGKILL: the lock file stays behind, naming a dead process
        holder.wait()
    assert (out / LOCK_NAME).read_text().startswith(f"pid {holder.pid}")
    assert infer.main(args(ckpt, masks, tmp_path)) == 0
    assert sorted(json.loads((out / "generation.json").read_text())["images"]) == sorted(NAMES)
    assert not (out / LOCK_NAME).exists()
    with FolderLock(out):  # in-process too: flock conflicts between open file descriptions
        with pytest.raises(UserError, match="being written by another run"):
            infer.main(args(ckpt, masks, tmp_path))


@pytest.mark.parametrize("extra, key", [
    (["--prompt", "scratches"], "prompt"),
    (["--grayscale"], "grayscale"),
    (["--num_per_mask", 2], "num_per_mask"),
    (["--mask_dir", "OTHER"], "mask_dir"),
    (["--output_size", 16], "output_size"),
])
def test_every_output_setting_is_checked_on_resume(tiny, done, tmp_path, extra, key):
    ckpt, masks = tiny
    other = tmp_path / "other"
    write_masks(other, NAMES, seed=5)
    extra = [str(other) if e == "OTHER" else e for e in extra]
    before = listing(done)
    with pytest.raises(UserError, match=rf"other settings \({key} "):
        infer.main(args(ckpt, masks, done.parent) + list(map(str, extra)))
    assert listing(done) == before  # in particular no In_1_s0 beside In_1


@pytest.mark.parametrize("extra, message", [
    (["--batch_size", 0], "--batch_size must be >= 1"),
    (["--batch_size", -1], "--batch_size must be >= 1"),
    (["--guidance_scale", "nan"], "--guidance_scale must be a finite number"),
    (["--guidance_scale", "inf"], "--guidance_scale must be a finite number"),
    (["--guidance_scale=-inf"], "--guidance_scale must be a finite number"),
    (["--output_size", 0], "--output_size must be a number of pixels from 1 to 4096"),
    (["--output_size", -3], "--output_size must be a number of pixels from 1 to 4096"),
    (["--output_size", 100000], "--output_size must be a number of pixels from 1 to 4096"),
    (["--device", "tpu"], "--device 'tpu':? unknown"),
    (["--steps", 5000], "--steps 5000: steps must be in 1..1000"),
    (["--steps", -2], "--steps must be >= 1"),
    (["--strength", "nan", "--init_image", "x.png"], "--strength must be in"),
    (["--alpha_type", "nan", 0, 0], "alpha_type"),
    (["--dilate", -1, "--background", "x.png"], "--dilate must be >= 0"),
    (["--num_per_mask", 0], "--num_per_mask must be at least 1"),
])
def test_bad_values_are_one_line_errors_and_write_nothing(tiny, tmp_path, extra, message):
    ckpt, masks = tiny
    with pytest.raises(UserError, match=message):
        infer.main(args(ckpt, masks, tmp_path) + list(map(str, extra)))
    assert not (tmp_path / "s" / "Source_Images").exists()


def test_mask_folder_discovery(tmp_path):
    write_masks(tmp_path, ["In_1", "Pa_2"])
    (tmp_path / ".DS_Store").write_bytes(b"\0junk")
    (tmp_path / "._In_1.png").write_bytes(b"resource fork")
    (tmp_path / "Sc_3.png").mkdir()  # a folder named like a mask
    with pytest.warns(UserWarning, match=r"Sc_3\.png/") as seen:
        assert [p.name for p in list_masks(tmp_path)] == ["In_1.png", "Pa_2.png"]
    assert not any("DS_Store" in str(w.message) or "._In_1" in str(w.message) for w in seen)
    with pytest.raises(UserError, match="is a file, not a folder.*--mask_dir"):
        list_masks(tmp_path / "In_1.png")
    # one table: masks are lossless everywhere (training, infer, maskgen)
    assert inference.jobs.MASK_EXTS is dataset.files.MASK_EXTS is dataset.pairs.MASK_EXTS
    assert ".jpg" not in dataset.files.MASK_EXTS and ".jpg" in dataset.files.IMAGE_EXTS
    Image.open(tmp_path / "In_1.png").convert("L").save(tmp_path / "In_4.jpg")
    with pytest.raises(UserError, match=r"In_4\.jpg: JPEG masks are lossy.*\.png \.bmp \.tif \.tiff"):
        list_masks(tmp_path)


@pytest.mark.parametrize("first, second", [("a.png", "a.bmp"), ("a.png", "a.PNG")])
def test_same_stem_masks_refused(tmp_path, first, second):
    write_masks(tmp_path, ["a"])
    Image.open(tmp_path / "a.png").save(tmp_path / "tmp_copy.png")
    (tmp_path / "a.png").rename(tmp_path / first)
    Image.open(tmp_path / "tmp_copy.png").save(tmp_path / second, format="PNG" if second.endswith("PNG") else None)
    (tmp_path / "tmp_copy.png").unlink()
    with pytest.raises(UserError, match=rf"{first} and {second} have the same name|{second} and {first} have"):
        list_masks(tmp_path)


def test_non_square_mask_uses_centre_square_and_refuses_an_empty_one(tmp_path):
    mask = np.zeros((20, 40), np.uint8)
    mask[5:15, 15:25] = 255  # inside the centred 20 x 20 square
    Image.fromarray(mask).save(tmp_path / "In_1.png")
    assert len(build_jobs(tmp_path, DEFAULT_CATEGORIES, 1, 0)) == 1
    mask[:] = 0
    mask[5:15, 0:6] = 255  # only left of the centred square
    Image.fromarray(mask).save(tmp_path / "In_2.png")
    with pytest.raises(UserError, match=r"In_2\.png.*crop them to a square"):
        build_jobs(tmp_path, DEFAULT_CATEGORIES, 1, 0)


@pytest.mark.parametrize("name, text, message", [
    ("generation.json", "[]", "not a generation record"),
    ("generation.json", '{"settings": 3}', "not a generation record"),
    ("generation.rank0.json", '{"settings": {}, "images": {', "malformed generation record"),
    ("generation.rank1.json", '{"settings": {}, "images": []}', "not a generation record"),
])
def test_corrupt_records_are_one_line_errors(tmp_path, name, text, message):
    (tmp_path / name).write_text(text)
    with pytest.raises(UserError, match=message) as err:
        PairedWriter(tmp_path, {"seed": 0})
    assert name in str(err.value) and "\n" not in str(err.value)


def test_unwritable_output_is_one_line(tiny, tmp_path, monkeypatch):
    ckpt, masks = tiny
    (tmp_path / "file").write_text("")
    with pytest.raises(UserError, match="exists and is not a folder"):
        infer.main(args(ckpt, masks, tmp_path, name="file"))
    with pytest.raises(UserError, match="cannot create the output folder"):
        infer.main(args(ckpt, masks, tmp_path / "file"))

    real_open = os.open

    def read_only(path, flags, *a):
        if str(path).endswith(LOCK_NAME):
            raise PermissionError(errno.EROFS, os.strerror(errno.EROFS))
        return real_open(path, flags, *a)
    monkeypatch.setattr("runtime.lock.os.open", read_only)
    with pytest.raises(UserError, match="cannot write there .Read-only file system"):
        infer.main(args(ckpt, masks, tmp_path, name="ro"))


def test_full_disk_is_one_line_and_leaves_no_temp_files(tiny, tmp_path, monkeypatch):
    ckpt, masks = tiny

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr("runtime.atomic.os.fsync", full)
    with pytest.raises(UserError, match="cannot write .No space left on device.*rerun to resume"):
        infer.main(args(ckpt, masks, tmp_path))
    assert not [p for p in (tmp_path / "s").rglob("*") if p.name.endswith(".tmp")]


def test_stale_temp_files_are_removed_and_never_outputs(tiny, tmp_path):
    ckpt, masks = tiny
    out = tmp_path / "s"
    stale = [out / ".generation.rank0.json.abc.tmp", out / "Source_Images" / ".In_1.png.x1.tmp",
             out / "Ground_truth" / ".In_1.png.x2.tmp"]
    for path in stale:  # a SIGKILLed run's unfinished writes, before any record existed
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")
    assert infer.main(args(ckpt, masks, tmp_path)) == 0
    assert not any(p.exists() for p in stale)
    assert sorted(p.name for p in (out / "Source_Images").iterdir()) == ["In_1.png", "Sc_2.png"]


def test_generate_batch_matches_the_dataset_pairs(tiny, done):
    """The one-batch API (tensors in, tensors out) reproduces a pair infer.py wrote."""
    import torch

    from inference.generate import GenerationOptions, generate_batch, load_pipeline
    from inference.jobs import mask_tensor

    ckpt, masks = tiny
    pipe = load_pipeline(ckpt, device="cpu")
    record = json.loads((done / "generation.json").read_text())["images"]["Sc_2"]
    opts = GenerationOptions(sampler="ddim", steps=1, batch_size=2)
    mask = mask_tensor(masks / "Sc_2.png", pipe.image_size)[None].float()
    image = generate_batch(pipe, mask, [2], [record["prompt"]], [record["seed"]], opts)
    assert image.shape == (1, 3, pipe.image_size, pipe.image_size) and 0 <= image.min() <= image.max() <= 1
    saved = torch.from_numpy(np.array(Image.open(done / "Source_Images" / "Sc_2.png"))).permute(2, 0, 1)
    assert (image[0] * 255).round().sub(saved).abs().max() <= 1
    with pytest.raises(UserError, match="needs one background image per mask"):
        generate_batch(pipe, mask, [2], ["p"], [0], GenerationOptions(mode="implant", steps=1))
