"""The mask-guided upscaler: bicubic when untrained, learns to give back a thin line's edge from its mask, and
travels from ``python -m training.upscaler`` through ``infer.py --upscaler`` and the release file."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

import infer
from dataset.splits import make_split, save_split
from evaluation import resolution_ceiling as rc
from evaluation.mask_adherence import defect_contrast
from inference.export import export_release
from ldm.checkpoint import read_checkpoint, read_upscaler
from ldm.modules.mask_upscaler import MaskUpscaler, resize_images, upscale_images
from runtime.errors import UserError
from tools.tiny_model import TINY, make_tiny_checkpoint, write_masks
from training import upscaler as tu

SIZE, SIDE = 48, 32  # stored pairs of 48 px; the tiny generator draws 32 px


def line_pairs(root, n=12, size=SIZE, seed=0):
    """Noisy grey images with a bright one-pixel line (mask: the line) in Sc_* and a dark blob in Pa_*."""
    rng = np.random.default_rng(seed)
    for sub in ("Source_Images", "Ground_truth"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    stems = []
    for i in range(n):
        bg = rng.uniform(70, 150) + rng.normal(0, 2, (size, size))
        mask = np.zeros((size, size), bool)
        if i % 2:
            c = int(rng.integers(8, size - 8))
            mask[6:size - 6, c] = True
            stem, image = f"Sc_{i + 1}", np.where(mask, bg + 70, bg)
        else:
            y, x = rng.integers(6, size // 2, 2)
            mask[y:y + 12, x:x + 12] = True
            stem, image = f"Pa_{i + 1}", np.where(mask, bg - 50, bg)
        Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(root / "Source_Images" / f"{stem}.png")
        Image.fromarray(mask.astype(np.uint8) * 255).save(root / "Ground_truth" / f"{stem}.png")
        stems.append(stem)
    return stems


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A synthetic paired folder, its split, and an upscaler trained by the CLI on the split's train pairs."""
    root = tmp_path_factory.mktemp("ups")
    stems = line_pairs(root / "data")
    split = save_split(make_split(stems, 0.25, 0), root / "split.json")
    out = root / "ups.safetensors"
    assert tu.main(["--data_root", str(root / "data"), "--split", str(split), "--side", str(SIDE), "--out", str(out),
                    "--iters", "250", "--batch_size", "8", "--crop", "32", "--width", "16", "--depth", "4",
                    "--threads", "1"]) == 0
    return root, split, out


def test_an_untrained_upscaler_is_bicubic_and_sizes_at_or_below_the_model_skip_it():
    torch.manual_seed(0)
    images = torch.rand(2, 3, 16, 16)
    masks = torch.rand(2, 40, 40) > 0.7
    net = MaskUpscaler(side=16, size=40, width=8, depth=3)
    assert torch.equal(upscale_images(images, 40, masks, net), resize_images(images, 40))
    torch.nn.init.normal_(net.net[-1].weight, std=0.5)
    sharpened = upscale_images(images, 40, masks, net)
    assert not torch.allclose(sharpened, resize_images(images, 40))
    assert torch.equal(upscale_images(images, 16, masks, net), images)          # the model's size: untouched
    assert torch.equal(upscale_images(images, 12, masks, net), resize_images(images, 12))
    other = upscale_images(images, 60, masks, net)                                # other sizes: via its own 40 px
    assert torch.allclose(other, resize_images(net(resize_images(images, 40), masks.float()), 60))
    with pytest.raises(ValueError, match="needs the masks"):
        upscale_images(images, 40, None, net)
    with pytest.raises(ValueError, match="size > side"):
        MaskUpscaler(side=40, size=40)


def test_training_gives_back_the_line_and_lowers_the_error(trained):
    root, split, out = trained
    held_out = json.loads(split.read_text())["test"]
    net = read_upscaler(out, SIDE)
    assert (net.side, net.size) == (SIDE, SIZE)
    inputs, masks, targets = tu.round_trip_pairs(root / "data", held_out, SIDE)
    with torch.no_grad():
        restored = net(inputs, masks[:, 0])
    err_bicubic = (inputs - targets).abs().mean()
    err_restored = (restored - targets).abs().mean()
    assert err_restored < 0.8 * err_bicubic
    lines = [i for i, s in enumerate(held_out) if s.startswith("Sc")]
    assert lines

    def cnr(x, i):
        return defect_contrast((x[i, 0].numpy() * 255).round(), masks[i, 0].numpy() > 0.5).cnr
    assert np.mean([cnr(restored, i) for i in lines]) > 1.2 * np.mean([cnr(inputs, i) for i in lines])
    meta = read_checkpoint(out).metadata
    assert meta["pairs"] == str(len(json.loads(split.read_text())["train"])) and len(meta["split_sha256"]) == 64


def test_resolution_ceiling_reports_the_upscaler_row_and_errors(trained, capsys, tmp_path):
    root, split, out = trained
    assert rc.main(["--real", str(root / "data"), "--sizes", str(SIDE), "--upscaler", str(out), "--split", str(split),
                    "--out", str(tmp_path / "c.json")]) == 0
    table = json.loads((tmp_path / "c.json").read_text())
    cnr, rmse = table["cnr"], table["rmse"]
    assert cnr[f"{SIDE} px + upscaler"]["scratches"] > cnr[f"{SIDE} px"]["scratches"]
    assert rmse[f"{SIDE} px + upscaler"]["all"] < rmse[f"{SIDE} px"]["all"]
    assert "RMSE against the stored images" in capsys.readouterr().out


def test_infer_and_the_release_use_it(trained, tmp_path):
    _, _, ups = trained
    ckpt = make_tiny_checkpoint(tmp_path / "tiny.safetensors")
    masks = tmp_path / "masks"
    write_masks(masks, ["Sc_1", "Pa_1"], size=SIZE)

    def run(name, *extra, ck=ckpt):
        out = tmp_path / name
        assert infer.main(["--ckpt", str(ck), "--mask_dir", str(masks), "--out", str(out), "--steps", "2",
                           "--sampler", "ddim", "--device", "cpu", *extra]) == 0
        settings = json.loads((out / "generation.json").read_text())["settings"]
        return np.asarray(Image.open(out / "Source_Images" / "Sc_1.png")).astype(int), settings

    plain, s_plain = run("plain", "--output_size", str(SIZE), "--upscaler", "none")
    sharp, s_sharp = run("sharp", "--output_size", str(SIZE), "--upscaler", str(ups))
    assert plain.shape[:2] == sharp.shape[:2] == (SIZE, SIZE) and np.abs(plain - sharp).max() > 0
    assert "upscaler" not in s_plain and s_sharp["upscaler"].startswith("ups.safetensors sha256 ")
    _, s_small = run("small", "--upscaler", str(ups))                  # at the model's size: unused, not recorded
    assert "upscaler" not in s_small

    release = export_release(ckpt, tmp_path / "rel.safetensors", upscaler=ups)
    assert read_checkpoint(release).metadata["upscaler"].startswith("ups.safetensors sha256 ")
    auto, s_auto = run("auto", "--output_size", str(SIZE), ck=release)                # embedded: used by default
    assert s_auto["upscaler"] == "embedded: " + read_checkpoint(release).metadata["upscaler"]
    bare, _ = run("bare", "--output_size", str(SIZE), "--upscaler", "none", ck=release)
    assert np.abs(auto - bare).max() > 0
    given, s_given = run("given", "--output_size", str(SIZE), "--config", str(TINY), ck=release)  # a config given
    assert np.array_equal(given, auto) and s_given["upscaler"] == s_auto["upscaler"]        # keeps the embedded one
    (tmp_path / "plain" / "Source_Images" / "Sc_1.png").unlink()  # a resume with another upscaler is refused
    with pytest.raises(UserError, match="other settings|different settings|upscaler"):
        run("plain", "--output_size", str(SIZE), "--upscaler", str(ups))
    with pytest.raises(UserError, match=r"--upscaler .*missing.safetensors: not found; give auto, none or a file"):
        run("x", "--upscaler", str(tmp_path / "missing.safetensors"))
    kept = export_release(release, tmp_path / "kept.safetensors", {"steps": 2})  # re-exported: kept
    assert "upscaler" in read_checkpoint(kept).sections
    dropped = export_release(release, tmp_path / "dropped.safetensors", upscaler="none")
    assert "upscaler" not in read_checkpoint(dropped).sections and "upscaler" not in read_checkpoint(dropped).config


def test_bad_inputs_are_one_line(trained, tmp_path):
    root, split, ups = trained
    ckpt = make_tiny_checkpoint(tmp_path / "tiny.safetensors")
    with pytest.raises(UserError, match="holds no mask-guided upscaler; write one with python -m training.upscaler"):
        read_upscaler(ckpt)
    with pytest.raises(UserError, match=f"trained for a {SIDE} px generator, this one draws 16 px"):
        read_upscaler(ups, 16)
    with pytest.raises(UserError, match="must end in .safetensors"):
        tu.main(["--data_root", str(root / "data"), "--split", str(split), "--side", "32",
                 "--out", str(tmp_path / "u.pt")])
    with pytest.raises(UserError, match="not above --side 64"):
        tu.main(["--data_root", str(root / "data"), "--split", str(split), "--side", "64",
                 "--out", str(tmp_path / "u.safetensors")])
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    with pytest.raises(UserError, match="a_file/u.safetensors: cannot write"):  # refused before any training
        tu.main(["--data_root", str(root / "data"), "--split", str(split), "--side", "32",
                 "--out", str(blocker / "u.safetensors")])
    no_train = save_split({**json.loads(split.read_text()), "train": []}, tmp_path / "no_train.json")
    with pytest.raises(UserError, match="no train pairs"):
        tu.main(["--data_root", str(root / "data"), "--split", str(no_train), "--side", "32",
                 "--out", str(tmp_path / "u.safetensors")])
    odd = tmp_path / "odd"
    stems = line_pairs(odd, n=4)
    Image.fromarray(np.full((40, 40), 100, np.uint8)).save(odd / "Source_Images" / "Pa_1.png")
    Image.fromarray(np.zeros((40, 40), np.uint8)).save(odd / "Ground_truth" / "Pa_1.png")
    odd_split = save_split(make_split(stems, 0.0, 0), tmp_path / "odd.json")
    with pytest.raises(UserError, match="the upscaler learns one stored size"):
        tu.main(["--data_root", str(odd), "--split", str(odd_split), "--side", "16",
                 "--out", str(tmp_path / "o.safetensors")])
    assert not (tmp_path / "o.safetensors").exists()


def test_a_training_config_with_an_upscaler_section_trains_the_generator_alone(tmp_path):
    from omegaconf import OmegaConf
    from train_helpers import make_trainer, tiny_train_config

    path = tiny_train_config(tmp_path)
    cfg = OmegaConf.load(path)
    cfg.upscaler = {"target": "ldm.modules.mask_upscaler.MaskUpscaler", "params": {"side": 32, "size": 48}}
    OmegaConf.save(cfg, path)
    trainer = make_trainer(path, tmp_path / "out")
    assert trainer.models.upscaler is None and "upscaler" not in trainer.models.parts()
