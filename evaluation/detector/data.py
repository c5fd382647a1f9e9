"""In-memory training data for the saliency detector.

Pairs are decoded once, resized to the network size and kept as uint8 arrays (900 images at
128x128 are ~15 MB), so an epoch costs only augmentation and the network itself.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset, Sampler

from dataset.io import read_image, read_mask

#: ImageNet statistics (timm encoders expect them; harmless for random init).
MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)


def load_image_array(path, size: int, in_chans: int = 3) -> np.ndarray:
    """Image file -> (size, size, in_chans) uint8 array."""
    img = read_image(path)
    if in_chans == 1:
        img = img.convert("L")
    img = img.resize((size, size), Image.BILINEAR)
    arr = np.asarray(img, np.uint8)
    return arr[..., None] if arr.ndim == 2 else arr


def to_tensor(arr: np.ndarray) -> torch.Tensor:
    """(H, W, C) uint8 -> normalised (C, H, W) float tensor."""
    c = arr.shape[-1]
    mean = MEAN[:c] if c == 3 else MEAN.mean(keepdims=True)
    std = STD[:c] if c == 3 else STD.mean(keepdims=True)
    x = (arr.astype(np.float32) / 255.0 - mean) / std
    return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))


class SaliencyPairs(Dataset):
    """(image, soft mask) tensors at ``size``; ``augment`` adds flips, 90-degree turns and a
    mild brightness/contrast change (surface defects have no canonical orientation)."""

    def __init__(self, pairs: Sequence, size: int, augment: bool = False, in_chans: int = 3,
                 seed: int = 0):
        self.size, self.augment = int(size), bool(augment)
        self.images = np.stack([load_image_array(p.image, self.size, in_chans) for p in pairs])
        masks = []
        for p in pairs:
            m = Image.fromarray(read_mask(p.mask).astype(np.uint8) * 255, "L")
            masks.append(np.asarray(m.resize((self.size, self.size), Image.BILINEAR), np.uint8))
        self.masks = np.stack(masks)
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        img, mask = self.images[i], self.masks[i]
        if self.augment:
            rng = self.rng
            k = int(rng.integers(4))
            img, mask = np.rot90(img, k), np.rot90(mask, k)
            if rng.random() < 0.5:
                img, mask = img[:, ::-1], mask[:, ::-1]
            gain, bias = rng.uniform(0.8, 1.2), rng.uniform(-20, 20)
            img = np.clip(img.astype(np.float32) * gain + bias, 0, 255).astype(np.uint8)
        x = to_tensor(img)
        y = torch.from_numpy(np.ascontiguousarray(mask, dtype=np.float32) / 255.0)[None]
        return x, y


class RealShareBatches(Sampler):
    """Batch indices that keep real pairs (indices ``0 .. n_real-1``) at ``real_share`` of every batch.

    Each batch holds ``min(batch_size, n_real)`` real pairs, as training on the real pairs alone would, plus
    ``round(real * (1 - real_share) / real_share)`` generated pairs (the indices after them). An epoch is one
    pass over the real pairs (last partial batch dropped, as the plain loader does), so a run sees its real
    pairs as often and takes as many steps per epoch as one on the real pairs alone; the generated pairs are
    drawn in turn from reshuffled passes over them. Deterministic per ``seed`` and epoch (:meth:`set_epoch`).
    """

    def __init__(self, n_real: int, n_total: int, batch_size: int, real_share: float, seed: int = 0) -> None:
        if not 0 < n_real < n_total:
            raise ValueError(f"need real and generated pairs, got {n_real} real of {n_total}")
        self.n_real, self.n_gen, self.seed, self.epoch = int(n_real), int(n_total - n_real), int(seed), 0
        self.real_per_batch = min(int(batch_size), self.n_real)
        self.gen_per_batch = max(1, round(self.real_per_batch * (1.0 - real_share) / real_share))
        self.steps = self.n_real // self.real_per_batch

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.steps

    def _generated(self, start: int, count: int) -> np.ndarray:
        """Positions ``start .. start+count-1`` of the endless stream of reshuffled passes over the generated pairs."""
        out, pos = [], start
        while len(out) < count:
            cycle, offset = divmod(pos, self.n_gen)
            perm = np.random.default_rng([self.seed, 1, cycle]).permutation(self.n_gen)
            take = perm[offset:offset + count - len(out)]
            out.extend(take.tolist())
            pos += len(take)
        return np.asarray(out, np.int64) + self.n_real

    def __iter__(self):
        real = np.random.default_rng([self.seed, 0, self.epoch]).permutation(self.n_real)
        need = self.steps * self.gen_per_batch
        gen = self._generated(self.epoch * need, need)
        for k in range(self.steps):
            r = real[k * self.real_per_batch:(k + 1) * self.real_per_batch]
            g = gen[k * self.gen_per_batch:(k + 1) * self.gen_per_batch]
            yield [int(i) for i in np.concatenate([r, g])]
