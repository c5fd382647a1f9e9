"""Torch dataset of (image, one-hot semantic map, caption) samples for GLIGEN-sem training."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from runtime.errors import UserError

from .categories import Category, categories_from_config
from .io import read_image, read_mask
from .pairs import Pair, find_pairs
from .splits import subset_pairs


def one_hot_sem(mask_bool: torch.Tensor, class_index: int | torch.Tensor, in_dim: int,
                dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """One-hot semantic map from a binary mask: channel 0 = background, ``class_index`` = defect.

    ``mask_bool`` is (H, W) or (B, H, W) (bool, or numeric with > 0.5 = defect); ``class_index``
    is an int or a per-sample tensor of shape (B,). Returns (in_dim, H, W) or (B, in_dim, H, W).
    """
    mask = torch.as_tensor(mask_bool)
    if mask.dtype != torch.bool:
        mask = mask > 0.5
    if mask.dim() not in (2, 3):
        raise ValueError(f"mask must be (H, W) or (B, H, W), got shape {tuple(mask.shape)}")
    single = mask.dim() == 2
    if single:
        mask = mask.unsqueeze(0)
    batch = mask.shape[0]
    cls = torch.as_tensor(class_index, dtype=torch.long, device=mask.device).reshape(-1)
    if cls.numel() == 1:
        cls = cls.expand(batch)
    elif cls.numel() != batch:
        raise ValueError(f"class_index has {cls.numel()} entries for a batch of {batch}")
    if cls.numel() and (int(cls.min()) < 0 or int(cls.max()) >= in_dim):
        raise ValueError(f"class indices must lie in [0, {in_dim - 1}] for in_dim={in_dim}")
    labels = torch.where(mask, cls.view(-1, 1, 1), torch.zeros((), dtype=torch.long,
                                                                 device=mask.device))
    out = torch.zeros((batch, in_dim, *mask.shape[1:]), dtype=dtype, device=mask.device)
    out.scatter_(1, labels.unsqueeze(1), 1.0)
    return out[0] if single else out


def center_crop_square(img: Image.Image) -> Image.Image:
    """The largest centred square of ``img``."""
    w, h = img.size
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    return img.crop((left, top, left + side, top + side))


def image_to_tensor(img: Image.Image) -> torch.Tensor:
    """uint8 RGB PIL image -> float32 3xHxW tensor in [-1, 1]."""
    arr = np.asarray(img.convert("RGB"), dtype=np.float32)
    return torch.from_numpy(arr / 127.5 - 1.0).permute(2, 0, 1).contiguous()


def prepare_sample(image: Image.Image, mask: np.ndarray, image_size: int,
                   flip: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Centre-crop, resize (bicubic image / nearest mask) and optionally mirror a pair."""
    image = center_crop_square(image).resize((image_size, image_size), Image.BICUBIC)
    mimg = center_crop_square(Image.fromarray(mask.astype(np.uint8) * 255, "L"))
    mimg = mimg.resize((image_size, image_size), Image.NEAREST)
    img_t = image_to_tensor(image)
    mask_t = torch.from_numpy(np.asarray(mimg) >= 128)
    if flip:
        img_t, mask_t = img_t.flip(-1), mask_t.flip(-1)
    return img_t, mask_t


def swap_brightness(image: torch.Tensor, own_mean: float, other_mean: float) -> torch.Tensor:
    """``image`` (in [-1, 1]) shifted so that its mean grey level is ``other_mean`` instead of ``own_mean``
    (clipped to [-1, 1]): the defect's contrast and the texture stay, the global brightness is another
    image's."""
    return (image + (other_mean - own_mean)).clamp(-1.0, 1.0)


def check_dataset_args(categories: Sequence[Category], image_size: int, in_dim: int,
                       prob_use_caption: float) -> None:
    """Validate the options shared by the real and procedural datasets."""
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
        raise UserError(f"image_size must be a positive integer, got {image_size!r}")
    top = max(c.index for c in categories)
    if not isinstance(in_dim, int) or in_dim <= top:
        raise UserError(f"in_dim={in_dim} is too small for category index {top}; the semantic map "
                        f"needs in_dim > {top} (the released model uses 152)")
    if not 0.0 <= float(prob_use_caption) <= 1.0:
        raise UserError(f"prob_use_caption must lie in [0, 1], got {prob_use_caption!r}")


def make_item(image: torch.Tensor, mask: torch.Tensor, category: Category, name: str,
              in_dim: int, prob_use_caption: float) -> dict[str, Any]:
    """The sample dict the trainer consumes."""
    use_caption = prob_use_caption >= 1.0 or float(torch.rand(())) < prob_use_caption
    return {
        "image": image,
        "sem": one_hot_sem(mask, category.index, in_dim),
        "mask": torch.tensor(1.0),
        "caption": category.prompt if use_caption else "",
        "category": category.index,
        "name": name,
    }


class SemanticMaskDataset(Dataset):
    """Image/mask pairs of an SD-Saliency-900 style folder as GLIGEN-sem training samples.

    Items: ``image`` 3xSxS in [-1, 1]; ``sem`` in_dim x S x S one-hot (0 background,
    ``category.index`` defect); ``mask`` = 1.0 (use the semantic map); ``caption`` (the category
    prompt, or "" with probability 1 - prob_use_caption); ``category`` index; ``name`` stem.

    ``brightness_swap`` is the probability that an item's image takes the mean grey level of another
    training image of its category, drawn at random (:func:`swap_brightness`). Each mask is paired with
    one image, so without it the network can learn each training mask's brightness as a function of the
    mask; with it the brightness given a mask follows the category's distribution of brightness, which
    the swap leaves unchanged.
    """

    def __init__(self, root: str | Path, categories: Any = None, stems: Sequence[str] | None = None,
                 image_size: int = 256, in_dim: int = 152, random_flip: bool = True,
                 prob_use_caption: float = 1.0, brightness_swap: float = 0.0) -> None:
        self.categories = categories_from_config(categories)
        check_dataset_args(self.categories, image_size, in_dim, prob_use_caption)
        if not 0.0 <= float(brightness_swap) <= 1.0:
            raise UserError(f"brightness_swap must lie in [0, 1], got {brightness_swap!r}")
        self.root = Path(root)
        pairs = find_pairs(self.root, self.categories)
        self.pairs: list[Pair] = pairs if stems is None else subset_pairs(pairs, list(stems))
        if not self.pairs:
            raise UserError(f"{self.root}: the selected split is empty; check the split file")
        self.image_size = image_size
        self.in_dim = in_dim
        self.random_flip = random_flip
        self.prob_use_caption = float(prob_use_caption)
        self.brightness_swap = float(brightness_swap)
        # each image's mean grey level in [-1, 1] and the items of each category, for the swap
        self.means = [float(image_to_tensor(center_crop_square(read_image(p.image))).mean())
                      for p in self.pairs] if self.brightness_swap > 0 else []
        self.same_category = {c: [i for i, p in enumerate(self.pairs) if p.category == c]
                              for c in {p.category for p in self.pairs}}

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> dict[str, Any]:
        pair = self.pairs[index]
        image, mask = read_image(pair.image), read_mask(pair.mask)
        if image.size != mask.shape[::-1]:
            raise UserError(f"{pair.image.name} / {pair.mask.name}: image and mask sizes differ")
        flip = self.random_flip and float(torch.rand(())) < 0.5
        img_t, mask_t = prepare_sample(image, mask, self.image_size, flip)
        if self.brightness_swap > 0 and float(torch.rand(())) < self.brightness_swap:
            same = self.same_category[pair.category]
            other = same[int(torch.randint(len(same), ()))]
            img_t = swap_brightness(img_t, self.means[index], self.means[other])
        return make_item(img_t, mask_t, pair.category, pair.stem, self.in_dim,
                         self.prob_use_caption)
