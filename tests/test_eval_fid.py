"""FID/KID: Fréchet distance against scipy on Gaussians with a known answer, injected feature
extractor on image folders, feature cache, missing-Inception message."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch
from PIL import Image

from evaluation import fid as fid_command
from metrics import fid
from runtime.errors import UserError, run_cli


def scipy_frechet(mu1, s1, mu2, s2):
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    d = mu1 - mu2
    return float(d @ d + np.trace(s1 + s2 - 2 * covmean))


def test_frechet_known_answer_diagonal():
    mu1, mu2 = np.zeros(5), np.array([1.0, -2.0, 0.5, 0.0, 3.0])
    v1, v2 = np.array([1.0, 2.0, 0.5, 4.0, 1.0]), np.array([2.0, 2.0, 1.5, 1.0, 9.0])
    known = float(np.sum((mu1 - mu2) ** 2) + np.sum(v1 + v2 - 2 * np.sqrt(v1 * v2)))
    got = fid.frechet_distance(mu1, np.diag(v1), mu2, np.diag(v2))
    assert got == pytest.approx(known, rel=1e-10)
    assert got == pytest.approx(scipy_frechet(mu1, np.diag(v1), mu2, np.diag(v2)), rel=1e-10)
    assert fid.frechet_distance(mu1, np.diag(v1), mu1, np.diag(v1)) == pytest.approx(0.0, abs=1e-9)


def test_frechet_matches_scipy_on_full_covariances():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(8, 8)), rng.normal(size=(8, 8))
    s1, s2 = a @ a.T + 0.1 * np.eye(8), b @ b.T + 0.1 * np.eye(8)
    mu1, mu2 = rng.normal(size=8), rng.normal(size=8)
    assert fid.frechet_distance(mu1, s1, mu2, s2) == pytest.approx(scipy_frechet(mu1, s1, mu2, s2), rel=1e-8)


def test_fid_from_samples_matches_scipy_and_known_gaussians():
    rng = np.random.default_rng(2)
    n, d = 20000, 4
    x = rng.normal(size=(n, d))
    shift = np.array([1.0, 0.0, -1.0, 2.0])
    scale = np.array([1.0, 2.0, 0.5, 1.0])
    y = rng.normal(size=(n, d)) * scale + shift
    got = fid.fid_from_features(x, y)
    direct = scipy_frechet(x.mean(0), np.cov(x, rowvar=False), y.mean(0), np.cov(y, rowvar=False))
    assert got == pytest.approx(direct, rel=1e-8)
    known = float(shift @ shift + np.sum(1 + scale ** 2 - 2 * scale))
    assert got == pytest.approx(known, rel=0.05)


def test_kid_zero_for_same_distribution_and_positive_for_shift():
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(300, 16)), rng.normal(size=(300, 16))
    c = rng.normal(size=(300, 16)) + 1.0
    same, _, size = fid.kid_from_features(a, b, subsets=20, subset_size=1000)
    far, _, _ = fid.kid_from_features(a, c, subsets=20)
    assert size == 300  # capped at the set size
    assert abs(same) < 0.05 and far > 10 * abs(same) and far > 0.1


class CountingExtractor:
    """A small random CNN standing in for Inception (uint8 N x 3 x H x W -> N x 8)."""

    name = "test-random-cnn"

    def __init__(self):
        torch.manual_seed(0)
        self.net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, stride=2), torch.nn.ReLU(),
                                       torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
        self.calls = 0

    @torch.no_grad()
    def __call__(self, images):
        assert images.dtype == torch.uint8 and images.shape[1] == 3
        self.calls += 1
        return self.net(images.float() / 255.0)


def _write_images(folder, names, rng, bright=0, size=24):
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        arr = np.clip(rng.normal(100 + bright, 30, (size, size)), 0, 255).astype(np.uint8)
        Image.fromarray(arr, "L").save(folder / f"{name}.png")


def test_compare_folders_per_category_and_cache(tmp_path):
    rng = np.random.default_rng(4)
    names = [f"{p}_{i}" for p in ("In", "Pa", "Sc") for i in range(1, 9)]
    _write_images(tmp_path / "real" / "Source_Images", names, rng)
    _write_images(tmp_path / "fake" / "Source_Images", names[:12], rng, bright=60, size=32)
    ext = CountingExtractor()
    logs = []
    rows = fid.compare_folders(tmp_path / "real", tmp_path / "fake", ext, cache_dir=tmp_path / "cache",
                               kid_subsets=5, progress=False, log=logs.append)
    assert [r["category"] for r in rows] == ["inclusion", "patches", "overall"]
    assert [r["n_real"] for r in rows] == [8, 8, 24] and [r["n_fake"] for r in rows] == [8, 4, 12]
    assert all(np.isfinite(r["FID"]) and r["FID"] > 0 for r in rows)
    calls = ext.calls
    again = fid.compare_folders(tmp_path / "real", tmp_path / "fake", ext, cache_dir=tmp_path / "cache",
                                kid_subsets=5, progress=False, log=logs.append)
    assert [r["FID"] for r in again] == pytest.approx([r["FID"] for r in rows])
    assert ext.calls - calls == 1  # real set from cache; 12 generated images = one batch
    assert any("from cache" in line for line in logs)
    # same folder against itself: FID 0
    self_rows = fid.compare_folders(tmp_path / "real", tmp_path / "real", ext, cache_dir=None,
                                    kid_subsets=5, progress=False, log=logs.append)
    assert self_rows[-1]["FID"] == pytest.approx(0.0, abs=1e-6)
    # changing a file's bytes changes the cache key
    files = sorted((tmp_path / "real" / "Source_Images").iterdir())
    key1 = fid.folder_digest(files, ext.name)
    Image.fromarray(np.zeros((24, 24), np.uint8)).save(files[0])
    assert fid.folder_digest(files, ext.name) != key1


def test_missing_inception_weights_message(tmp_path, monkeypatch):
    monkeypatch.delenv(fid.INCEPTION_ENV, raising=False)
    monkeypatch.setattr(fid, "REPO", tmp_path)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    with pytest.raises(UserError) as err:
        fid.find_inception_weights()
    msg = str(err.value)
    assert fid.INCEPTION_FILE in msg and "model_sem" in msg and fid.INCEPTION_URL in msg
    assert "\n" not in msg
    (tmp_path / "model_sem").mkdir()
    (tmp_path / "model_sem" / fid.INCEPTION_FILE).write_bytes(b"x")
    assert fid.find_inception_weights() == tmp_path / "model_sem" / fid.INCEPTION_FILE


def test_fid_cli_missing_weights_and_empty_folder(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv(fid.INCEPTION_ENV, raising=False)
    monkeypatch.setattr(fid, "REPO", tmp_path)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    rng = np.random.default_rng(5)
    _write_images(tmp_path / "a", ["In_1", "In_2"], rng)
    (tmp_path / "empty").mkdir()
    for argv, expect in ((["--real", str(tmp_path / "a"), "--fake", str(tmp_path / "a")], fid.INCEPTION_FILE),
                         (["--real", str(tmp_path / "a"), "--fake", str(tmp_path / "empty")], "no image files")):
        with pytest.raises(SystemExit) as code:
            run_cli(lambda: fid_command.main(argv))
        assert code.value.code == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error:") and expect in err and len(err.splitlines()) == 1


def test_inception_wrapper_loads_a_local_weights_file(tmp_path, monkeypatch):
    """The real extractor path: torch-fidelity's Inception built from a local file (random
    weights here, saved in the release file's state-dict layout), 2048-d pool features."""
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    with monkeypatch.context() as m:
        m.setattr(FeatureExtractorInceptionV3, "load_state_dict", lambda self, sd: None)
        m.setattr("torch_fidelity.feature_extractor_inceptionv3.load_state_dict_from_url", lambda *a, **k: {})
        state = FeatureExtractorInceptionV3("inception-v3-compat", ["2048"]).state_dict()
    path = tmp_path / fid.INCEPTION_FILE
    torch.save(state, path)
    ext = fid.InceptionFeatures(path)
    images = torch.randint(0, 256, (2, 3, 40, 40), dtype=torch.uint8)
    feats = ext(images)
    assert feats.shape == (2, 2048) and torch.isfinite(feats).all()
    bad = tmp_path / "bad.pth"
    torch.save({"x": torch.zeros(1)}, bad)
    with pytest.raises(UserError, match="not the torch-fidelity Inception weights"):
        fid.InceptionFeatures(bad)


@pytest.mark.parametrize("argv,expect", [
    (["--kid_subsets", "0"], "--kid_subsets must be a whole number of at least 1"),
    (["--batch_size", "0"], "--batch_size must be"),
    (["--batch_size", "-3"], "--batch_size must be"),
    (["--kid_subset_size", "0"], "--kid_subset_size must be"),
    (["--device", "tpu"], "--device 'tpu'"),
])
def test_fid_cli_refuses_bad_numbers_before_loading_anything(tmp_path, capsys, argv, expect):
    _write_images(tmp_path / "a", ["In_1", "In_2"], np.random.default_rng(0))
    with pytest.raises(SystemExit) as code:
        run_cli(lambda: fid_command.main(["--real", str(tmp_path / "a"), "--fake", str(tmp_path / "a"), *argv]))
    err = capsys.readouterr().err.strip().splitlines()
    assert code.value.code == 2 and len(err) == 1 and expect in err[0]
    with pytest.raises(UserError, match="kid_subsets"):
        fid.kid_from_features(np.zeros((4, 2)), np.zeros((4, 2)), subsets=0)


@pytest.mark.parametrize("damage", [b"", b"not an npz", "wrong stems"])
def test_a_damaged_feature_cache_is_recomputed_with_a_warning(tmp_path, damage):
    rng = np.random.default_rng(6)
    _write_images(tmp_path / "real", ["In_1", "In_2", "In_3"], rng)
    ext, logs = CountingExtractor(), []
    stems, feats = fid.folder_features(tmp_path / "real", ext, tmp_path / "cache", progress=False, log=logs.append)
    (cache,) = (tmp_path / "cache").iterdir()
    if damage == "wrong stems":
        np.savez(cache, stems=np.array(["x", "y", "z"]), features=feats)
    else:
        cache.write_bytes(damage)
    again_stems, again = fid.folder_features(tmp_path / "real", ext, tmp_path / "cache", progress=False,
                                             log=logs.append)
    assert again_stems == stems and np.allclose(again, feats)
    assert any(line.startswith("warning: feature cache") and "recomputing" in line for line in logs)
    assert ext.calls == 2
    fid.folder_features(tmp_path / "real", ext, tmp_path / "cache", progress=False, log=logs.append)
    assert ext.calls == 2  # the rewritten cache is used


def test_a_non_image_file_with_an_image_name_is_one_line(tmp_path):
    rng = np.random.default_rng(7)
    _write_images(tmp_path / "real", ["In_1", "In_2"], rng)
    (tmp_path / "real" / "In_3.png").write_text("not a picture")
    with pytest.raises(UserError, match=r"In_3.png: cannot read image"):
        fid.folder_features(tmp_path / "real", CountingExtractor(), None, progress=False, log=lambda m: None)
