"""The trainer's data path: dataset choice, SD-Saliency-900 batches, the resumable distributed stream."""
from __future__ import annotations

from collections import Counter

import pytest
import torch
from train_helpers import REPO

from ldm.config import load_config
from runtime.errors import UserError
from training.data import SampleStream, build_dataset, grid_indices, make_loader

FULL = REPO / "configs" / "sd_saliency_900.yaml"
DEMO = REPO / "configs" / "demo.yaml"


def test_sd_saliency_900_batches(saliency_root):
    cfg = load_config(FULL)
    ds = build_dataset(str(saliency_root), cfg)
    assert len(ds) == 900
    assert Counter(p.category.name for p in ds.pairs) == {"inclusion": 300, "patches": 300, "scratches": 300}
    assert len(build_dataset(str(saliency_root.parent), cfg)) == 900  # DATA_ROOT holding SD-saliency-900/
    batch = next(make_loader(ds, batch_size=3, workers=0, seed=0, rank=0, world_size=1, start_iteration=0))
    assert batch["image"].shape == (3, 3, 256, 256) and batch["image"].min() >= -1 and batch["image"].max() <= 1
    sem = batch["sem"]
    assert sem.shape == (3, 152, 256, 256)
    assert set(sem.unique().tolist()) <= {0.0, 1.0} and torch.all(sem.sum(1) == 1)
    for i in range(3):
        present = set(sem[i].flatten(1).amax(1).nonzero().flatten().tolist())
        assert present <= {0, int(batch["category"][i])} and int(batch["category"][i]) in (1, 2, 3)
    assert batch["caption"][0] in ("inclusion", "patches", "scratches")
    assert torch.all(batch["mask"] == 1)
    # fixed grid examples cycle through the categories
    assert [ds.pairs[i].category.index for i in grid_indices(ds, 4)] == [1, 2, 3, 1]


def test_demo_uses_procedural_data_without_data_root():
    ds = build_dataset(None, load_config(DEMO))
    assert type(ds).__name__ == "ProceduralDefectDataset" and len(ds) == 600


def test_full_config_without_dataset_says_where_to_put_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError, match="no dataset at DATA/SD-saliency-900"):
        build_dataset(None, load_config(FULL))


def test_stream_is_a_distributed_permutation_per_epoch_and_resumable():
    size, world = 10, 3
    ranks = [SampleStream(size, seed=5, rank=r, world_size=world) for r in range(world)]
    per_rank = [[r.element(j) for j in range(10)] for r in ranks]
    global_order = [per_rank[g % world][g // world] for g in range(30)]
    for epoch in range(3):
        assert sorted(i for i, _ in global_order[epoch * size:(epoch + 1) * size]) == list(range(size))
    assert [i for i, _ in global_order[:size]] != [i for i, _ in global_order[size:2 * size]]
    seeds = [s for _, s in global_order]
    assert len(set(seeds)) == len(seeds)  # every element draws its own augmentation seed
    later = SampleStream(size, seed=5, rank=1, world_size=world, start=4)
    it = iter(later)
    assert [next(it) for _ in range(6)] == per_rank[1][4:10]
    assert SampleStream(size, seed=6).element(0) != SampleStream(size, seed=5).element(0) or \
        SampleStream(size, seed=6).element(1) != SampleStream(size, seed=5).element(1)
