"""Training data: which dataset, and a resumable distributed sample stream over it.

Dataset choice (``build_dataset``):
  * ``--DATA_ROOT`` given: the SD-Saliency-900 layout there (or in ``DATA_ROOT/<data.name>``);
  * otherwise a config with ``data.procedural`` uses the procedural defect generator (the demo);
  * otherwise ``DATA/<data.name>`` (the original README's place for the dataset).

The stream (``SampleStream``) is one endless sequence of epochs, each a seeded permutation of the
dataset; rank ``r`` of ``W`` takes every ``W``-th element (a distributed sampler), and every element
carries its own seed for the dataset's random flip / caption drop. Position ``j`` of a rank's stream
therefore depends only on (seed, j, rank, W): resuming at iteration ``i`` restarts the stream at
``i * batch_size`` and reproduces the uninterrupted run exactly, with any number of loader workers.
"""
from __future__ import annotations

import signal
from pathlib import Path
from typing import Any, Iterator, Optional

import torch
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader, Dataset, Sampler
from torch.utils.data._utils.collate import default_collate

from dataset.files import IMAGE_DIRS
from runtime import options as O
from runtime.errors import UserError
from runtime.seeds import Stream, mix_seed

ERROR_KEY = "__error__"


def _plain(node: Any) -> Any:
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node


def in_dim_of(cfg: DictConfig) -> int:
    """Channels of the one-hot semantic map the model expects (the mask encoder's ``in_dim``)."""
    try:
        return int(cfg.model.params.grounding_tokenizer.params.in_dim)
    except Exception:
        raise UserError("the config's model.params.grounding_tokenizer.params.in_dim is missing; "
                        "DefFiller needs the mask encoder's input width") from None


# the config's data: section, with its defaults (training/options.py checks configs against it)
DATA_SCHEMA = {
    "name": "SD-saliency-900", "root": None, "image_size": 256, "random_flip": True, "prob_use_caption": 1.0,
    "brightness_swap": 0.0,
    "categories": O.Open(None),
    "procedural": {"n_per_category": 100, "seed": 0, "orientation": "horizontal"},
}
_D = O.defaults(DATA_SCHEMA)


def dataset_folder(data_root: Optional[str], cfg: DictConfig) -> Optional[Path]:
    """The folder to read pairs from, or None for the procedural generator."""
    data = cfg.get("data") or {}
    name = str(data.get("name", _D["name"]))
    if data_root is None:
        if data.get("procedural") is not None:
            return None
        root = Path(data.get("root") or Path("DATA") / name)
        if not root.is_dir():
            raise UserError(f"no dataset at {root}: download SD-Saliency-900, put it there (Source Images/ "
                            "+ Ground truth/) or pass --DATA_ROOT; configs/demo.yaml needs no data")
        return root
    root = Path(data_root)
    if not root.is_dir():
        raise UserError(f"--DATA_ROOT {root}: folder not found")
    nested = root / name
    looks_like_dataset = any((root / d).is_dir() for d in IMAGE_DIRS)
    return nested if (not looks_like_dataset and nested.is_dir()) else root


def data_provenance(data_root: Optional[str], cfg: DictConfig, split: Optional[str] = None) -> dict[str, str]:
    """What a run trains on, for its checkpoints' metadata (:data:`ldm.checkpoint.PROVENANCE_KEYS`): the data
    folder, the split file and the sha256 of its bytes, and whether the data is procedural."""
    from runtime.digest import file_sha256

    folder = dataset_folder(data_root, cfg)
    return {"data_root": "" if folder is None else str(folder.resolve()),
            "split": str(Path(split).resolve()) if split else "", "split_sha256": file_sha256(split) if split else "",
            "procedural": str(folder is None).lower()}


def build_dataset(data_root: Optional[str], cfg: DictConfig, split: Optional[str] = None) -> Dataset:
    """The training dataset the config and ``--DATA_ROOT`` describe (see the module docstring)."""
    from dataset import ProceduralDefectDataset, SemanticMaskDataset, load_split

    data = cfg.get("data") or {}
    in_dim = in_dim_of(cfg)
    image_size = int(data.get("image_size", _D["image_size"]))
    categories = _plain(data.get("categories"))
    prob_use_caption = float(data.get("prob_use_caption", _D["prob_use_caption"]))
    folder = dataset_folder(data_root, cfg)
    if folder is None:
        proc = _plain(data.get("procedural")) or {}
        proc = {**_D["procedural"], **O.check(proc, DATA_SCHEMA["procedural"], "config", "data.procedural")}
        if split is not None:
            raise UserError("--split applies to a dataset folder, not to procedural data; pass --DATA_ROOT")
        if float(data.get("brightness_swap", 0.0)):
            raise UserError("data.brightness_swap applies to a dataset folder, not to procedural data; set it to 0 "
                            "or pass --DATA_ROOT")
        return ProceduralDefectDataset(int(proc["n_per_category"]), image_size=image_size,
                                       seed=int(proc["seed"]), categories=categories, in_dim=in_dim,
                                       prob_use_caption=prob_use_caption,
                                       orientation=str(proc["orientation"]))
    stems = load_split(split)["train"] if split is not None else None
    return SemanticMaskDataset(folder, categories=categories, stems=stems, image_size=image_size,
                               in_dim=in_dim, random_flip=bool(data.get("random_flip", _D["random_flip"])),
                               prob_use_caption=prob_use_caption,
                               brightness_swap=float(data.get("brightness_swap", _D["brightness_swap"])))


class SampleStream(Sampler):
    """Endless, resumable, distributed sample order; yields ``(index, sample_seed)`` pairs."""

    def __init__(self, size: int, seed: int, rank: int = 0, world_size: int = 1, start: int = 0) -> None:
        if size < 1:
            raise UserError("the training dataset is empty")
        self.size, self.seed, self.rank, self.world_size, self.start = size, int(seed), rank, world_size, start
        self._epoch, self._perm = -1, None

    def element(self, j: int) -> tuple[int, int]:
        """Position ``j`` of this rank's stream."""
        g = j * self.world_size + self.rank
        epoch, pos = divmod(g, self.size)
        if epoch != self._epoch:
            gen = torch.Generator().manual_seed(mix_seed(self.seed, Stream.EPOCH_ORDER, epoch))
            self._perm, self._epoch = torch.randperm(self.size, generator=gen).tolist(), epoch
        return self._perm[pos], mix_seed(self.seed, Stream.SAMPLE, g)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        j = self.start
        while True:
            yield self.element(j)
            j += 1


class SeededItems(Dataset):
    """Calls the wrapped dataset under a per-element seed; user errors travel as data (see collate)."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: tuple[int, int]) -> dict[str, Any]:
        index, seed = key
        try:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                return self.dataset[index]
        except UserError as exc:
            # Raised inside a worker, DataLoader would re-raise it with a multi-line traceback.
            return {ERROR_KEY: str(exc)}


def collate(items: list[dict[str, Any]]) -> dict[str, Any]:
    for item in items:
        if ERROR_KEY in item:
            return {ERROR_KEY: item[ERROR_KEY]}
    return default_collate(items)


def _worker_ignores_stop_signals(_: int) -> None:
    """Ctrl-C, ``timeout`` and cluster schedulers signal the whole process group; the workers keep
    serving batches so the main process can finish its step and save (it stops the workers itself)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def make_loader(dataset: Dataset, batch_size: int, workers: int, seed: int, rank: int, world_size: int,
                start_iteration: int, pin_memory: bool = False) -> Iterator[dict[str, Any]]:
    """An endless iterator of batches starting at ``start_iteration`` (user errors re-raised here)."""
    stream = SampleStream(len(dataset), seed, rank, world_size, start=start_iteration * batch_size)
    loader = DataLoader(SeededItems(dataset), batch_size=batch_size, sampler=stream, num_workers=workers,
                        collate_fn=collate, pin_memory=pin_memory, persistent_workers=False,
                        worker_init_fn=_worker_ignores_stop_signals if workers > 0 else None,
                        prefetch_factor=2 if workers > 0 else None)

    def batches() -> Iterator[dict[str, Any]]:
        for batch in loader:
            if ERROR_KEY in batch:
                raise UserError(batch[ERROR_KEY])
            yield batch
    return batches()


def grid_indices(dataset: Dataset, n: int) -> list[int]:
    """``n`` fixed dataset indices for sample grids, cycling through the categories."""
    size = len(dataset)  # type: ignore[arg-type]
    if hasattr(dataset, "pairs"):
        cats = [p.category.index for p in dataset.pairs]
    elif hasattr(dataset, "categories"):
        k = len(dataset.categories)
        cats = [dataset.categories[i % k].index for i in range(size)]
    else:
        return list(range(min(n, size)))
    by_cat: dict[int, list[int]] = {}
    for i, c in enumerate(cats):
        by_cat.setdefault(c, []).append(i)
    order, depth = [], 0
    while len(order) < min(n, size):
        for c in sorted(by_cat):
            if depth < len(by_cat[c]) and len(order) < n:
                order.append(by_cat[c][depth])
        depth += 1
    return order


def grid_batch(dataset: Dataset, n: int, seed: int) -> dict[str, Any]:
    """The fixed batch the sample grids show (the same at every checkpoint of a run)."""
    items = SeededItems(dataset)
    batch = collate([items[(i, mix_seed(seed, Stream.GRID_SAMPLE, i))] for i in grid_indices(dataset, n)])
    if ERROR_KEY in batch:
        raise UserError(batch[ERROR_KEY])
    return batch


HELD_OUT_PER_CATEGORY = 8
HELD_OUT_SEED_OFFSET = 1000


def write_held_out_procedural(dataset: Dataset, root: Path) -> Optional[Path]:
    """For procedural training data: write a few new image/mask pairs (other seeds than training) to
    ``root`` in the SD-Saliency-900 layout, once, so ``infer.py --mask_dir root/Ground_truth`` has masks."""
    from dataset import ProceduralDefectDataset, write_procedural_dataset

    if not isinstance(dataset, ProceduralDefectDataset) or root.exists():
        return None
    tmp = root.with_name(f".{root.name}.tmp")
    if tmp.exists():
        import shutil
        shutil.rmtree(tmp)
    write_procedural_dataset(tmp, HELD_OUT_PER_CATEGORY, size=dataset.image_size,
                             seed=dataset.seed + HELD_OUT_SEED_OFFSET, categories=dataset.categories,
                             orientation=dataset.orientation)
    tmp.rename(root)
    return root
