"""infer.py end to end on a tiny random model (CPU)."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import infer
from dataset.pairs import natural_key
from inference.jobs import Job, job_seed, shard
from inference.preview import write_preview
from runtime.errors import UserError
from tools.tiny_model import make_tiny_checkpoint, write_masks

REPO = Path(__file__).resolve().parents[1]
NAMES = ["In_1", "In_2", "In_10", "Pa_1", "Pa_2", "Sc_1", "Sc_2", "Sc_3"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("infer")
    ckpt = make_tiny_checkpoint(root / "tiny.safetensors")
    masks = root / "masks"
    write_masks(masks, NAMES)
    return ckpt, masks


def run(ckpt, masks, out, *extra, name="s"):
    args = ["--ckpt", str(ckpt), "--mask_dir", str(masks), "--folder", str(out), "--save_folder_name", name,
            "--steps", "4", "--batch_size", "3", "--device", "cpu", *map(str, extra)]
    assert infer.main(args) == 0
    return out / name


def pixels(folder, name):
    return np.asarray(Image.open(folder / "Source_Images" / f"{name}.png")).astype(np.int16)


def test_paired_layout_and_masks(tiny, tmp_path):
    ckpt, masks = tiny
    out = run(ckpt, masks, tmp_path)
    imgs = sorted(p.name for p in (out / "Source_Images").iterdir())
    gts = sorted(p.name for p in (out / "Ground_truth").iterdir())
    assert imgs == gts == sorted(f"{n}.png" for n in NAMES)
    for n in NAMES:
        assert np.array_equal(np.asarray(Image.open(out / "Ground_truth" / f"{n}.png")),
                              np.asarray(Image.open(masks / f"{n}.png")))
    record = json.loads((out / "generation.json").read_text())
    assert len(record["settings"]["checkpoint_sha256"]) == 64
    assert record["images"]["Pa_2"]["category"] == "patches" and record["images"]["Pa_2"]["prompt"] == "patches"
    assert not list(out.glob("generation.rank*.json"))

    # preview.png: the 8 pairs as a 6 + 2 contact sheet, each mask outlined in red (outline only)
    sheet = np.asarray(Image.open(out / "preview.png"))
    assert sheet.shape == (4 + 2 * 164, 4 + 6 * 164, 3)
    first = sorted(NAMES, key=natural_key)[0]
    tile = sheet[4:164, 4:164]
    inside = np.asarray(Image.open(masks / f"{first}.png").convert("L").resize((160, 160), Image.NEAREST)) > 127
    red = (tile == [255, 40, 40]).all(-1)
    assert red.any() and not (red & ~inside).any() and red.sum() < 0.8 * inside.sum()
    assert write_preview(out, ["no_such_image"]) is None


def test_seeds_reproduce_and_differ(tiny, tmp_path):
    ckpt, masks = tiny
    a = run(ckpt, masks, tmp_path, "--seed", 1, name="a")
    b = run(ckpt, masks, tmp_path, "--seed", 1, "--batch_size", 5, name="b")  # batching must not matter
    c = run(ckpt, masks, tmp_path, "--seed", 2, name="c")
    for n in ("In_1", "Sc_3"):
        assert np.abs(pixels(a, n) - pixels(b, n)).max() <= 1
        assert np.abs(pixels(a, n) - pixels(c, n)).mean() > 1


def test_resume_skips_and_other_settings_refused(tiny, tmp_path):
    ckpt, masks = tiny
    out = run(ckpt, masks, tmp_path)
    (out / "Source_Images" / "Sc_1.png").unlink()
    stamps = {p.name: p.stat().st_mtime_ns for p in (out / "Source_Images").iterdir()}
    run(ckpt, masks, tmp_path)
    assert (out / "Source_Images" / "Sc_1.png").is_file()
    assert all((out / "Source_Images" / n).stat().st_mtime_ns == t for n, t in stamps.items())
    with pytest.raises(UserError, match="other settings"):
        run(ckpt, masks, tmp_path, "--guidance_scale", 5)


def test_output_size_and_num_per_mask(tiny, tmp_path):
    ckpt, masks = tiny
    out = run(ckpt, masks, tmp_path, "--output_size", 20, "--num_per_mask", 2, "--prompt", "scratches")
    names = sorted(p.stem for p in (out / "Source_Images").iterdir())
    assert len(names) == 16 and "In_1_s0" in names and "In_1_s1" in names
    assert Image.open(out / "Source_Images" / "In_1_s1.png").size == (20, 20)
    gt = np.asarray(Image.open(out / "Ground_truth" / "In_1_s1.png"))
    assert gt.shape == (20, 20) and set(np.unique(gt)) <= {0, 255}
    record = json.loads((out / "generation.json").read_text())["images"]
    assert {r["prompt"] for r in record.values()} == {"scratches"}


@pytest.mark.parametrize("sampler", ["plms", "unipc"])  # UniPC evaluates at predicted, not corrected, latents
def test_implant_keeps_background_outside_mask(tiny, tmp_path, sampler):
    ckpt, masks = tiny
    rng = np.random.default_rng(0)
    bg = (rng.random((40, 40, 3)) * 255).astype(np.uint8)  # other size: resized with a warning
    Image.fromarray(bg).save(tmp_path / "bg.png")
    with pytest.warns(UserWarning, match="resized"):
        out = run(ckpt, masks, tmp_path, "--background", tmp_path / "bg.png", "--dilate", 2, "--sampler", sampler)
    ref = np.asarray(Image.fromarray(bg).resize((32, 32), Image.BICUBIC)).astype(np.int16)
    for n in NAMES:
        mask = np.asarray(Image.open(masks / f"{n}.png")) > 0
        grown = np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).filter(
            __import__("PIL.ImageFilter", fromlist=["MaxFilter"]).MaxFilter(5))) > 0
        diff = np.abs(pixels(out, n) - ref)[~grown]
        assert diff.max() <= 2, f"{n}: background changed by {diff.max()} outside the dilated mask"
        assert np.abs(pixels(out, n) - ref)[mask].mean() > 5  # something was generated inside


def test_sdedit_start(tiny, tmp_path):
    ckpt, masks = tiny
    Image.fromarray(np.full((32, 32, 3), 128, np.uint8)).save(tmp_path / "init.png")
    out = run(ckpt, masks, tmp_path, "--init_image", tmp_path / "init.png", "--strength", 0.5, "--sampler", "ddim")
    assert json.loads((out / "generation.json").read_text())["settings"]["mode"] == "sdedit"


def test_sharding_has_no_gaps_or_duplicates():
    jobs = [Job(Path(f"{i}.png"), str(i), None, "p", job_seed(0, str(i), 0)) for i in range(11)]
    for world in (1, 2, 3, 4):
        got = [j.name for r in range(world) for j in shard(jobs, r, world)]
        assert sorted(got) == sorted(j.name for j in jobs) and len(got) == len(set(got))


def test_two_rank_torchrun_covers_every_mask_once(tiny, tmp_path):
    ckpt, masks = tiny
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29533",
           str(REPO / "infer.py"), "--ckpt", str(ckpt), "--mask_dir", str(masks), "--folder", str(tmp_path),
           "--steps", "2", "--batch_size", "2", "--device", "cpu"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=REPO)
    assert out.returncode == 0, out.stderr[-2000:]
    record = json.loads((tmp_path / "samples" / "generation.json").read_text())
    assert sorted(record["images"]) == sorted(NAMES)
    assert sorted(p.stem for p in (tmp_path / "samples" / "Source_Images").iterdir()) == sorted(NAMES)


def test_bad_inputs(tiny, tmp_path):
    ckpt, masks = tiny
    with pytest.raises(UserError, match="not found"):
        run(ckpt, tmp_path / "nope", tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("hi")
    with pytest.warns(UserWarning, match="non-mask"), pytest.raises(UserError, match="no mask files"):
        run(ckpt, empty, tmp_path)
    blank = tmp_path / "blank"
    write_masks(blank, ["In_1"])
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(blank / "Pa_9.png")
    with pytest.raises(UserError, match="no foreground.*Pa_9.png"):
        run(ckpt, blank, tmp_path)
    unknown = tmp_path / "unknown"
    write_masks(unknown, ["Xy_1"])
    with pytest.raises(UserError, match="Xy_1"):
        run(ckpt, unknown, tmp_path)
    with pytest.raises(UserError, match="not found"):
        run(tmp_path / "missing.safetensors", masks, tmp_path)
    (tmp_path / "bad.png").write_bytes(b"not an image")
    with pytest.raises(UserError, match="bad.png"):
        run(ckpt, masks, tmp_path, "--background", tmp_path / "bad.png", name="bg")
    with pytest.raises(UserError, match="does not fit"):
        infer.main(["--ckpt", str(ckpt), "--config", str(REPO / "configs" / "sd_saliency_900.yaml"),
                    "--mask_dir", str(masks), "--folder", str(tmp_path)])


def test_steps_default_per_sampler(tiny, tmp_path):
    ckpt, masks = tiny
    args = ["--ckpt", str(ckpt), "--mask_dir", str(masks), "--folder", str(tmp_path), "--save_folder_name", "u",
            "--batch_size", "8", "--device", "cpu", "--sampler", "unipc"]
    assert infer.main(args) == 0
    assert json.loads((tmp_path / "u" / "generation.json").read_text())["settings"]["steps"] == 20
    with pytest.raises(UserError, match="--steps must be >= 1"):
        infer.main(args[:-2] + ["--steps", "0"])
    with pytest.raises(UserError, match="--steps 990: steps must be in 1..981"):
        infer.main(args + ["--steps", "990"])


def test_threads_flag_sets_torch_threads_and_refuses_negatives(tiny, tmp_path, capsys):
    import torch

    ckpt, masks = tiny
    before = torch.get_num_threads()
    try:
        run(ckpt, masks, tmp_path, "--threads", "1")
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    with pytest.raises(SystemExit) as code:
        infer.main(["--ckpt", str(ckpt), "--mask_dir", str(masks), "--threads", "-1"])
    assert code.value.code == 2 and "must be at least 0" in capsys.readouterr().err
