"""The page's handlers in-process on a tiny model: the same images and records as infer.py, SDEdit,
batch, the mask producer, and bad input as one-line messages."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

import infer
from runtime.errors import UserError
from tools.tiny_model import make_tiny_checkpoint, write_masks
from webapp.canvas import editor_value, mask_from_upload
from webapp.engine import Engine
from webapp.handlers import MODE_LABELS, Page
from webapp.keep import KeptPairs

GEN, IMPLANT, SDEDIT = (MODE_LABELS[m] for m in ("generate", "implant", "sdedit"))


def no_progress(*args, **kwargs) -> None:
    return None


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("page")
    ckpt = make_tiny_checkpoint(root / "tiny.safetensors")
    masks = root / "masks"
    write_masks(masks, ["In_1", "Pa_1", "Sc_1"])
    yield {"root": root, "ckpt": ckpt, "masks": masks}
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def page(tiny):
    engine = Engine(tiny["ckpt"], device="cpu")
    out = tiny["root"] / "out"
    return Page(engine, KeptPairs(out / "kept", engine.keep_settings()), out)


def test_same_images_and_records_as_infer(page, tiny):
    # infer.py on the folder, then the page on one of its masks with that image's seed
    assert infer.main(["--ckpt", str(tiny["ckpt"]), "--mask_dir", str(tiny["masks"]), "--folder",
                       str(tiny["root"]), "--save_folder_name", "ref", "--steps", "3", "--device", "cpu"]) == 0
    ref = tiny["root"] / "ref"
    entry = json.loads((ref / "generation.json").read_text())["images"]["Pa_1"]
    mask = mask_from_upload(tiny["masks"] / "Pa_1.png", page.engine.size)
    shown, timing, result, selected = page.generate(
        editor_value(mask, page.engine.size), "upload Pa_1.png", "patches", GEN, None, 0.8, "plms", 3, 3.0,
        entry["seed"], 2, progress=no_progress)
    assert len(shown) == 2 and "2 image(s) in" in timing and selected == 0
    assert shown[0][0].shape == (256, 256, 3) and (shown[0][0] == [255, 40, 40]).all(-1).any()  # outline
    page.keep(result, 0)
    kept = page.kept.root
    name = sorted(json.loads((kept / "generation.json").read_text())["images"])[-1]
    for folder in ("Source_Images", "Ground_truth"):
        assert (kept / folder / f"{name}.png").read_bytes() == (ref / folder / "Pa_1.png").read_bytes()
    record = json.loads((kept / "generation.json").read_text())["images"][name]
    assert {k: record[k] for k in entry if k != "mask"} == {k: v for k, v in entry.items() if k != "mask"}


def test_sdedit_and_batch(page, tiny, tmp_path):
    start = tmp_path / "start.png"
    Image.fromarray(np.full((32, 32, 3), 90, np.uint8)).save(start)
    mask = np.zeros((page.engine.size,) * 2, bool)
    mask[4:12, 4:20] = True
    runs = {strength: page.generate(editor_value(mask, page.engine.size), "canvas", "inclusion", SDEDIT, str(start),
                                    strength, "ddim", 4, 3.0, 0, 1, progress=no_progress)[2]
            for strength in (0.25, 1.0)}
    assert np.abs(runs[0.25]["images"][0] - runs[1.0]["images"][0]).max() > 0.05  # the start image matters
    name = page.keep(runs[0.25], 0)[1].split("**")[1]
    record = json.loads((page.kept.root / "generation.json").read_text())["images"][name]
    assert (record["mode"], record["strength"], record["init_image"], record["steps"]) == ("sdedit", 0.25,
                                                                                         "start.png", 4)

    calls = []
    note, preview = page.batch(str(tiny["masks"]), 0, "b1", 2, [], GEN, None, "", 0.8, "ddim", 3, 3.0, 7,
                               progress=lambda *a, **k: calls.append(a))
    root = page.batch_root / "b1"
    assert note.startswith("6 pairs") and preview == str(root / "preview.png")
    settings = json.loads((root / "generation.json").read_text())["settings"]
    assert (settings["num_per_mask"], settings["seed"], settings["sampler"]) == (2, 7, "ddim")
    assert calls[-1][0] == (6, 6)


def test_mask_producer(page, tmp_path):
    from test_maskgen_pipeline import make_masks, tiny_config

    from maskgen.train import train

    cfg = tiny_config(epochs=1)
    run = tmp_path / "run"
    train(cfg, make_masks(tmp_path / "data" / "Ground truth", per_category=2).parent, run, progress=False)
    engine = Engine(page.engine.ckpt, device="cpu", maskgen_ckpt=run)
    other = Page(engine, page.kept, page.batch_root)
    value, origin = other.new_mask("scratches", 3)
    assert value["composite"].max() == 255 and origin.startswith("maskgen") and origin.endswith("seed 3")
    note, _ = other.batch("", 1, "from_maskgen", 1, ["patches"], GEN, None, "", 0.8, "ddim", 2, 3.0, 0,
                          progress=no_progress)
    assert note.startswith("1 pairs")
    assert [p.name for p in (page.batch_root / "from_maskgen" / "Ground_truth").iterdir()] == ["Pa_gen_0001.png"]


@pytest.mark.parametrize("call, message", [
    (lambda p, e: p.generate(e, "canvas", None, GEN, None, 0.8, "plms", 3, 3.0, 0, 1, no_progress),
     "pick a category"),
    (lambda p, e: p.generate(e, "canvas", "patches", IMPLANT, None, 0.8, "plms", 3, 3.0, 0, 1, no_progress),
     "needs a defect-free background"),
    (lambda p, e: p.generate(e, "canvas", "patches", GEN, None, 0.8, "unipc", 2000, 3.0, 0, 1, no_progress),
     "--steps 2000"),
    (lambda p, e: p.keep(None, 0), "nothing to keep yet"),
    (lambda p, e: p.batch("", 0, "x", 1, [], GEN, None, "", 0.8, "plms", 3, 3.0, 0, no_progress),
     "type a folder of mask PNGs"),
    (lambda p, e: p.batch("/no/such/folder", 0, "x", 1, [], GEN, None, "", 0.8, "plms", 3, 3.0, 0, no_progress),
     "not found"),
    (lambda p, e: p.batch("/tmp", 0, "../up", 1, [], GEN, None, "", 0.8, "plms", 3, 3.0, 0, no_progress),
     "folder name"),
    (lambda p, e: p.new_mask("patches", 0), "no mask producer loaded"),
])
def test_bad_input_is_one_line(page, call, message):
    mask = np.zeros((page.engine.size,) * 2, bool)
    mask[2:6, 2:6] = True
    with pytest.raises(UserError, match=message) as err:
        call(page, editor_value(mask, page.engine.size))
    assert "\n" not in str(err.value)


NAN, INF = float("nan"), float("inf")


@pytest.mark.parametrize("call, message", [
    (lambda p, e: p.generate(e, "canvas", "patches", GEN, None, 0.8, "ddim", NAN, 3.0, 0, 1, no_progress), "Steps"),
    (lambda p, e: p.generate(e, "canvas", "patches", GEN, None, 0.8, "ddim", INF, 3.0, 0, 1, no_progress), "Steps"),
    (lambda p, e: p.generate(e, "canvas", "patches", GEN, None, 0.8, "ddim", 2, 3.0, NAN, 1, no_progress), "Seed"),
    (lambda p, e: p.generate(e, "canvas", "patches", GEN, None, 0.8, "ddim", 2, 3.0, INF, 1, no_progress), "Seed"),
    (lambda p, e: p.generate(e, "canvas", "patches", GEN, None, 0.8, "ddim", 2, 3.0, 1e30, 1, no_progress), "Seed"),
    (lambda p, e: p.generate(e, "canvas", "patches", GEN, None, 0.8, "ddim", 2, 3.0, -1, 1, no_progress), "Seed"),
    (lambda p, e: p.generate(e, "canvas", "patches", GEN, None, 0.8, "ddim", 2, NAN, 0, 1, no_progress), "Guidance"),
    (lambda p, e: p.generate(e, "canvas", "patches", GEN, None, NAN, "ddim", 2, 3.0, 0, 1, no_progress), "Strength"),
    (lambda p, e: p.generate(e, "canvas", "patches", GEN, None, 0.8, "ddim", 2, 3.0, 0, NAN, no_progress),
     "Variants"),
    (lambda p, e: p.keep({"images": np.zeros((1, 3, 8, 8)), "records": [{}], "mask": None, "prefix": "Pa"}, NAN),
     "the selected image"),
    (lambda p, e: p.batch("/tmp", NAN, "x", 1, [], GEN, None, "", 0.8, "ddim", 2, 3.0, 0, no_progress),
     "new masks per category"),
    (lambda p, e: p.batch("/tmp", 0, "x", NAN, [], GEN, None, "", 0.8, "ddim", 2, 3.0, 0, no_progress),
     "images per mask"),
    (lambda p, e: p.batch("/tmp", 0, "x", 1, [], GEN, None, "", 0.8, "ddim", 2, 3.0, 1e30, no_progress), "Seed"),
    (lambda p, e: p.batch("/tmp", 0, "x", 1, [], GEN, None, "", 0.8, "ddim", INF, 3.0, 0, no_progress), "Steps"),
    (lambda p, e: p.new_mask("patches", NAN), "Seed"),
    (lambda p, e: p.new_mask("patches", 1e30), "Seed"),
], ids=["steps_nan", "steps_inf", "seed_nan", "seed_inf", "seed_1e30", "seed_negative", "guidance_nan",
        "strength_nan", "variants_nan", "keep_index_nan", "batch_new_nan", "batch_per_mask_nan", "batch_seed_1e30",
        "batch_steps_inf", "new_mask_seed_nan", "new_mask_seed_1e30"])
def test_every_number_a_handler_receives_is_checked(page, call, message):
    """NaN, inf and 1e30 (which the Seed box accepts) are one-line messages, never an internal error."""
    mask = np.zeros((page.engine.size,) * 2, bool)
    mask[2:6, 2:6] = True
    with pytest.raises(UserError, match=message) as err:
        call(page, editor_value(mask, page.engine.size))
    assert "\n" not in str(err.value)


def test_a_huge_upload_and_a_damaged_kept_record_are_one_line(page, tmp_path):
    from webapp.handlers import MAX_UPLOAD_BYTES

    big = tmp_path / "big.png"
    with open(big, "wb") as fh:  # sparse: no disk used
        fh.truncate(MAX_UPLOAD_BYTES + 1)
    with pytest.raises(UserError, match="big.png: the mask is 20 MB; upload one of at most 20 MB"):
        page.upload_mask(str(big))
    mask = np.zeros((page.engine.size,) * 2, bool)
    mask[2:6, 2:6] = True
    with pytest.raises(UserError, match="the image is 20 MB"):
        page.generate(editor_value(mask, page.engine.size), "canvas", "patches", SDEDIT, str(big), 0.8, "ddim", 2,
                      3.0, 0, 1, no_progress)

    kept = KeptPairs(tmp_path / "kept", page.engine.keep_settings())
    (kept.root / "generation.json").write_text("{broken")
    with pytest.raises(UserError, match="generation.json: cannot read the kept pairs' record"):
        kept.items()
    (kept.root / "generation.json").write_text("[]")
    with pytest.raises(UserError, match="not a generation record"):
        kept.items()


def test_a_distilled_model_sampled_with_guidance_says_so(tiny, tmp_path):
    from ldm.checkpoint import read_checkpoint, save_checkpoint

    plain = read_checkpoint(tiny["ckpt"])
    ckpt = save_checkpoint(tmp_path / "student.safetensors", plain.sections, plain.config,
                           metadata={"teacher_guidance": "guidance 3"})
    page = Page(Engine(ckpt, device="cpu"), KeptPairs(tmp_path / "kept", {}), tmp_path / "out")
    mask = np.zeros((page.engine.size,) * 2, bool)
    mask[4:12, 4:20] = True
    timing = {g: page.generate(editor_value(mask, page.engine.size), "canvas", "inclusion", GEN, None, 0.8, "ddim",
                               2, g, 0, 1, progress=no_progress)[1] for g in (1.0, 3.0)}
    assert "Note" not in timing[1.0]
    assert "**Note:** this model was distilled to give its teacher's guidance 3 unguided; guidance 3 on" in timing[3.0]
    note, _ = page.batch(str(tiny["masks"]), 0, "b", 1, [], GEN, None, "", 0.8, "ddim", 2, 2.0, 0,
                         progress=no_progress)
    assert note.startswith("3 pairs") and "guidance 2 on top" in note
