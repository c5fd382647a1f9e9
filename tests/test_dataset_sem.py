"""SemanticMaskDataset items and the one_hot_sem helper."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from dataset import SemanticMaskDataset, find_pairs, one_hot_sem, read_mask, write_procedural_dataset
from runtime.errors import UserError

KEYS = {"image", "sem", "mask", "caption", "category", "name"}


def check_item(item: dict, size: int, in_dim: int) -> None:
    assert set(item) == KEYS
    image, sem = item["image"], item["sem"]
    assert image.shape == (3, size, size) and image.dtype == torch.float32
    assert image.min() >= -1.0 and image.max() <= 1.0
    assert sem.shape == (in_dim, size, size) and sem.dtype == torch.float32
    assert torch.equal(sem.sum(0), torch.ones(size, size))            # one-hot per pixel
    assert set(sem.unique().tolist()) <= {0.0, 1.0}
    used = {c for c in range(in_dim) if sem[c].any()}
    assert used <= {0, item["category"]}
    assert torch.equal(item["mask"], torch.tensor(1.0))
    assert isinstance(item["name"], str) and isinstance(item["category"], int)


@pytest.fixture()
def mirror_root(tmp_path: Path) -> Path:
    """Dataset whose images are their own masks (white = defect), with asymmetric masks."""
    root = tmp_path / "d"
    write_procedural_dataset(root, n_per_category=2, size=24, seed=5)
    for path in (root / "Ground_truth").iterdir():
        mask = np.zeros((24, 24), np.uint8)
        mask[3:9, 2:5] = 255                     # a block on the left only
        mask[15:20, 1:12] = 255
        Image.fromarray(mask).save(path)
        Image.fromarray(mask).save(root / "Source_Images" / path.name)
    return root


def test_items_on_tmp_dataset(mirror_root: Path) -> None:
    ds = SemanticMaskDataset(mirror_root, image_size=24, in_dim=8, random_flip=False)
    assert len(ds) == 6
    for i in range(len(ds)):
        item = ds[i]
        check_item(item, 24, 8)
        pair = ds.pairs[i]
        assert item["name"] == pair.stem and item["category"] == pair.category.index
        assert item["caption"] == pair.category.prompt
        expected = torch.from_numpy(read_mask(pair.mask))
        assert torch.equal(item["sem"][pair.category.index] > 0.5, expected)


def test_flip_is_shared_by_image_and_mask(mirror_root: Path) -> None:
    ds = SemanticMaskDataset(mirror_root, image_size=24, in_dim=8, random_flip=True)
    original = torch.from_numpy(read_mask(ds.pairs[0].mask))
    torch.manual_seed(0)
    flipped_seen = plain_seen = 0
    for _ in range(24):
        item = ds[0]
        defect = item["sem"][item["category"]] > 0.5
        assert torch.equal(item["image"][0] > 0, defect)       # image and mask agree
        if torch.equal(defect, original.flip(-1)):
            flipped_seen += 1
        else:
            assert torch.equal(defect, original)
            plain_seen += 1
    assert flipped_seen > 0 and plain_seen > 0


def test_center_crop_and_resize(tmp_path: Path) -> None:
    root = tmp_path / "d"
    (root / "Source_Images").mkdir(parents=True)
    (root / "Ground_truth").mkdir()
    img = np.zeros((12, 20), np.uint8)
    img[:, 4:16] = 255                          # the centred 12x12 square is white
    mask = np.zeros((12, 20), np.uint8)
    mask[:, :4] = 255                           # defect only in the cropped-away left strip
    mask[0:6, 4:10] = 255                       # and a quarter of the kept square
    Image.fromarray(img).save(root / "Source_Images" / "Sc_1.bmp")
    Image.fromarray(mask).save(root / "Ground_truth" / "Sc_1.png")
    item = SemanticMaskDataset(root, image_size=6, in_dim=4, random_flip=False)[0]
    check_item(item, 6, 4)
    assert torch.allclose(item["image"], torch.ones(3, 6, 6))
    expected = torch.zeros(6, 6, dtype=torch.bool)
    expected[0:3, 0:3] = True
    assert torch.equal(item["sem"][3] > 0.5, expected)


def test_real_dataset_item(saliency_root: Path) -> None:
    ds = SemanticMaskDataset(saliency_root, image_size=64, random_flip=False,
                             stems=["Sc_7", "Pa_10"])
    assert [p.stem for p in ds.pairs] == ["Sc_7", "Pa_10"]
    item = ds[1]
    check_item(item, 64, 152)
    assert item["name"] == "Pa_10" and item["category"] == 2 and item["caption"] == "patches"
    mask = read_mask(ds.pairs[1].mask)
    small = np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).resize((64, 64),
                                                                          Image.NEAREST)) > 127
    assert torch.equal(item["sem"][2] > 0.5, torch.from_numpy(small))
    batch = next(iter(DataLoader(ds, batch_size=2)))
    assert batch["sem"].shape == (2, 152, 64, 64) and batch["caption"] == ["scratches", "patches"]
    assert batch["category"].tolist() == [3, 2]


def test_caption_dropout(mirror_root: Path) -> None:
    ds = SemanticMaskDataset(mirror_root, image_size=8, in_dim=4, prob_use_caption=0.0)
    assert all(ds[i]["caption"] == "" for i in range(len(ds)))
    ds = SemanticMaskDataset(mirror_root, image_size=8, in_dim=4, prob_use_caption=0.5)
    torch.manual_seed(0)
    captions = {ds[0]["caption"] for _ in range(40)}
    assert captions == {"", "inclusion"}


def test_bad_arguments(mirror_root: Path) -> None:
    for kwargs in ({"in_dim": 3}, {"image_size": 0}, {"prob_use_caption": 1.5},
                   {"stems": ["In_1", "In_77"]}):
        with pytest.raises(UserError) as exc:
            SemanticMaskDataset(mirror_root, **kwargs)
        assert "\n" not in str(exc.value)
    assert len(SemanticMaskDataset(mirror_root, stems=["Sc_2", "In_1"], in_dim=4)) == 2


def test_one_hot_sem() -> None:
    mask = torch.zeros(2, 4, 5, dtype=torch.bool)
    mask[0, 1, 1] = True
    mask[1, 2:, 3:] = True
    out = one_hot_sem(mask, torch.tensor([3, 7]), in_dim=9)
    assert out.shape == (2, 9, 4, 5) and out.dtype == torch.float32
    assert torch.equal(out.sum(1), torch.ones(2, 4, 5))
    assert torch.equal(out[0, 3].bool(), mask[0]) and torch.equal(out[1, 7].bool(), mask[1])
    assert torch.equal(out[:, 0].bool(), ~mask)
    assert out[0, 7].sum() == 0 and out[1, 3].sum() == 0
    single = one_hot_sem(mask[1].float(), 2, in_dim=4)
    assert single.shape == (4, 4, 5) and torch.equal(single[2].bool(), mask[1])
    assert torch.equal(one_hot_sem(mask, 5, 6)[:, 5], mask.float())
    with pytest.raises(ValueError):
        one_hot_sem(mask, 9, in_dim=9)
    with pytest.raises(ValueError):
        one_hot_sem(mask, torch.tensor([1, 2, 3]), in_dim=9)


def test_pairs_used_by_dataset_match_find_pairs(mirror_root: Path) -> None:
    ds = SemanticMaskDataset(mirror_root, in_dim=4)
    assert ds.pairs == find_pairs(mirror_root)


@pytest.fixture()
def grey_root(tmp_path: Path) -> Path:
    """Two categories of flat grey images with one dark defect square: grey levels 60/100/140 (In), 200/220 (Pa)."""
    root = tmp_path / "g"
    write_procedural_dataset(root, n_per_category=1, size=16, seed=0)
    for folder in ("Source_Images", "Ground_truth"):
        for f in (root / folder).iterdir():
            f.unlink()
    mask = np.zeros((16, 16), np.uint8)
    mask[4:8, 4:8] = 255
    for name, level in (("In_1", 60), ("In_2", 100), ("In_3", 140), ("Pa_1", 200), ("Pa_2", 220)):
        img = np.full((16, 16), level, np.uint8)
        img[4:8, 4:8] = level - 40
        Image.fromarray(img).save(root / "Source_Images" / f"{name}.png")
        Image.fromarray(mask).save(root / "Ground_truth" / f"{name}.png")
    return root


def test_brightness_swap_takes_another_images_grey_level_of_the_same_category(grey_root: Path) -> None:
    plain = SemanticMaskDataset(grey_root, image_size=16, in_dim=4, random_flip=False)
    own = {plain[i]["name"]: plain[i]["image"] for i in range(len(plain))}
    ds = SemanticMaskDataset(grey_root, image_size=16, in_dim=4, random_flip=False, brightness_swap=1.0)
    means = {p.stem: m for p, m in zip(ds.pairs, ds.means)}
    seen: dict[str, set] = {}
    torch.manual_seed(0)
    for _ in range(12):
        for i in range(len(ds)):
            item = ds[i]
            name, image = item["name"], item["image"]
            shift = float(image.mean()) - means[name]
            others = {round(means[s] - means[name], 4) for s in means if s[:2] == name[:2]}
            assert round(shift, 4) in others                       # another image of the same category's mean
            assert torch.allclose(image - own[name], torch.full_like(image, shift), atol=1e-5)  # contrast kept
            seen.setdefault(name, set()).add(round(shift, 4))
    assert all(len(v) > 1 for v in seen.values())                  # the swap is drawn, not fixed


def test_brightness_swap_off_by_default_and_checked(grey_root: Path) -> None:
    ds = SemanticMaskDataset(grey_root, image_size=16, in_dim=4, random_flip=False)
    assert ds.means == [] and torch.equal(ds[0]["image"], ds[0]["image"])
    for bad in (-0.1, 1.5):
        with pytest.raises(UserError, match="brightness_swap must lie in"):
            SemanticMaskDataset(grey_root, image_size=16, in_dim=4, brightness_swap=bad)


def test_brightness_swap_clips_to_the_pixel_range() -> None:
    from dataset.sem_dataset import swap_brightness

    image = torch.tensor([[-0.9, 0.0, 0.8]])
    assert torch.allclose(swap_brightness(image, 0.0, 0.5), torch.tensor([[-0.4, 0.5, 1.0]]))


def test_brightness_swap_from_the_config(grey_root: Path) -> None:
    from omegaconf import OmegaConf

    from runtime.configs import load_config
    from training.data import build_dataset

    cfg = OmegaConf.merge(load_config("configs/demo.yaml"), {"data": {"image_size": 16, "brightness_swap": 0.5}})
    with pytest.raises(UserError, match="brightness_swap applies to a dataset folder"):
        build_dataset(None, cfg)
    ds = build_dataset(str(grey_root), cfg)
    assert ds.brightness_swap == 0.5 and len(ds.means) == 5
