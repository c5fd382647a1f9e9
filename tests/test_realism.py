"""evaluation.realism: brightness, contrast, CNR, FWD and memorisation of generated vs real pairs, on tiny images."""
import csv
import json
import os
import warnings

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import ndimage

from dataset.splits import make_split, save_split
from evaluation import realism
from evaluation.realism import fwd as rfwd
from evaluation.realism.fwd import frechet_distances, halves, packet_stats
from runtime.errors import UserError, run_cli

SIDE = 32
DELTA = {"In": -45.0, "Pa": -35.0, "Sc": 45.0}


def write_pair(root, stem, image, mask=None):
    (root / "Source_Images").mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(root / "Source_Images" / f"{stem}.png")
    if mask is not None:
        (root / "Ground_truth").mkdir(parents=True, exist_ok=True)
        Image.fromarray(mask.astype(np.uint8) * 255).save(root / "Ground_truth" / f"{stem}.png")


def sample(rng, stem, contrast=1.0):
    """A textured grey background (random level) with a defect of the stem's category inside a random box."""
    background = rng.normal(110, 25) + 15 * ndimage.gaussian_filter(rng.normal(size=(SIDE, SIDE)), 2) / 0.14
    mask = np.zeros((SIDE, SIDE), bool)
    y, x = rng.integers(4, SIDE - 14, size=2)
    mask[y:y + 10, x:x + 8] = True
    return np.where(mask, background + contrast * DELTA[stem[:2]], background), mask


STEMS = [f"{c}_{i}" for c in ("In", "Pa", "Sc") for i in range(1, 9)]


def make_set(root, seed, stems=STEMS, contrast=1.0):
    rng = np.random.default_rng(seed)
    for stem in stems:
        write_pair(root, stem, *sample(rng, stem, contrast))
    return root


def copy_set(src, dst, transform=lambda im: im):
    for path in sorted((src / "Source_Images").iterdir()):
        mask = np.asarray(Image.open(src / "Ground_truth" / path.name)) > 0
        write_pair(dst, path.stem, transform(np.asarray(Image.open(path), np.float64)), mask)
    return dst


def card_for(real, generated, *extra):
    args = realism.build_parser().parse_args(["--real", str(real), "--generated", str(generated), *map(str, extra)])
    return realism.build_card(realism.load_inputs(args))


def target(card, category, prefix):
    return next(t for t in card["targets"] if t["category"] == category and t["target"].startswith(prefix))


@pytest.fixture(scope="module")
def real(tmp_path_factory):
    return make_set(tmp_path_factory.mktemp("real"), 0)


def test_identical_copies_match_everywhere(real, tmp_path):
    card = card_for(real, copy_set(real, tmp_path / "gen"))
    for cat in ("inclusion", "patches", "scratches", "overall"):
        b = card["brightness"][cat]
        assert b["ks"] == pytest.approx(0) and b["spread_ratio"] == pytest.approx(1)
        assert card["contrast"][cat]["ratio"] == pytest.approx(1)
        assert card["cnr"][cat]["ratio"] == pytest.approx(1)
        f = card["fwd"][cat]
        assert f["paired"] and f["fwd"] == pytest.approx(0, abs=1e-6) and f["ratio"] == pytest.approx(1)
    assert all(t["met"] for t in card["targets"])


def test_mid_grey_generated_set_fails_brightness(real, tmp_path):
    card = card_for(real, copy_set(real, tmp_path / "gen", lambda im: np.full_like(im, 128)))
    b = card["brightness"]["overall"]
    assert b["ks"] > 0.4 and b["spread_ratio"] < 0.3
    assert target(card, "overall", "brightness KS")["met"] is False
    assert target(card, "overall", "brightness spread")["met"] is False
    assert card["contrast"]["overall"]["ratio"] < 0.1 and card["cnr"]["overall"]["ratio"] < 0.1


def test_half_contrast_defects_halve_the_cnr(real, tmp_path):
    card = card_for(real, make_set(tmp_path / "gen", 0, contrast=0.5))   # same backgrounds and masks
    for cat in ("inclusion", "scratches", "overall"):
        assert 0.35 < card["cnr"][cat]["ratio"] < 0.65
        assert target(card, cat, "CNR")["met"] is False


def test_fwd_orders_copies_before_noise_and_floor_uses_halves(real, tmp_path):
    rng = np.random.default_rng(5)
    x = realism.data.resized(realism.read_set(realism.list_set(real, "real", [])).images, SIDE)
    noise = rng.uniform(0, 1, x.shape)
    assert realism.fwd_sets(x, x.copy(), 4) < 1e-9 < realism.fwd_sets(x, noise, 4)
    card = card_for(real, copy_set(real, tmp_path / "noise", lambda im: rng.uniform(0, 255, im.shape)))
    f = card["fwd"]["overall"]
    assert f["n_half_a"] + f["n_half_b"] == f["n_real"] == 24 and f["n_half_a"] == 12
    assert 0 < f["floor"] < f["same_size"] and f["ratio"] > 2 and f["met"] is False


def test_halves_are_disjoint_stratified_and_seeded(real):
    image_set = realism.list_set(real, "real", realism.cli.categories_from_config(None))
    names = ["inclusion", "patches", "scratches"]
    h = halves(image_set, names, seed=0, draw=0)
    for name in names:
        a, b = h[name]
        assert not set(a) & set(b) and len(a) == len(b) == 4
        assert {image_set.categories[i] for i in np.concatenate([a, b])} == {name}
    assert sorted(np.concatenate(h["overall"])) == list(range(24))
    assert np.array_equal(halves(image_set, names, 0, 0)["overall"][0], h["overall"][0])
    assert not np.array_equal(halves(image_set, names, 1, 0)["overall"][0], h["overall"][0])


def test_frechet_distance_matches_pytorchfwd(real):
    """The batched distance equals pytorchfwd's per packet, and grey x 3 equals pytorchfwd's RGB statistics."""
    pytest.importorskip("pytorchfwd", reason="optional cross-check: pip install --no-deps pytorchfwd")
    from pytorchfwd.freq_math import calculate_frechet_distance

    rng = np.random.default_rng(1)
    a_img, b_img = rng.uniform(0, 1, (20, SIDE, SIDE)), rng.uniform(0, 1, (9, SIDE, SIDE)) ** 2
    a, b = packet_stats(a_img, 4), packet_stats(b_img, 4)
    old = torch.get_default_dtype()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")     # scipy's sqrtm on the singular covariances of identical RGB channels
        reference = [calculate_frechet_distance(a.mu[p], a.sigma[p], b.mu[p], b.sigma[p]) for p in range(len(a.mu))]
        try:
            from pytorchfwd.fwd import _compute_avg_frechet_distance, compute_packet_statistics

            rgb = [[torch.from_numpy(np.repeat(x[:, None], 3, axis=1))] for x in (a_img, b_img)]
            (mu1, s1), (mu2, s2) = (compute_packet_statistics(batches, "Haar", 4, False) for batches in rgb)
            expected = _compute_avg_frechet_distance(mu1, mu2, s1, s2)
        finally:
            torch.set_default_dtype(old)    # pytorchfwd.fwd sets float64 when imported
    assert np.allclose(frechet_distances(a, b), reference, rtol=1e-6, atol=1e-9)
    assert realism.fwd_sets(a_img, b_img, 4) == pytest.approx(expected, rel=1e-6)


def test_frechet_distance_of_a_set_smaller_than_its_packets_agrees_with_the_full_covariance():
    """Sets of fewer images than coefficients per packet take the n x n route; the value is the D x D one's."""
    rng = np.random.default_rng(3)
    small, large = rng.uniform(0, 1, (6, 64, 64)), rng.uniform(0, 1, (40, 64, 64)) ** 2   # 16 coefficients a packet
    a, b, c = packet_stats(large, 4), packet_stats(small, 4), packet_stats(large[::-1].copy() ** 1.5, 4)
    assert b.factor is not None and a.factor is None and b.factor.shape == (256, 6, 16)
    assert np.allclose(b.factor.transpose(0, 2, 1) @ b.factor, b.sigma)
    full = rfwd.PacketStats(b.mu, b.sigma, b.n)                                  # the same statistics, no factor
    # a singular D x D covariance's zero eigenvalues come out as +-1e-16, each adding its square root
    assert np.allclose(frechet_distances(a, b), frechet_distances(a, full), rtol=1e-6, atol=1e-7)
    assert np.allclose(frechet_distances(b, a), frechet_distances(full, a), rtol=1e-6, atol=1e-7)
    assert np.allclose(frechet_distances(c, a), frechet_distances(rfwd.PacketStats(c.mu, c.sigma, c.n), a))
    assert frechet_distances(a, b).min() > 0 and np.allclose(frechet_distances(b, b), 0, atol=1e-7)


def test_real_sample_fwd_reference_scores_training_sets_against_the_real_halves_and_floor(real, tmp_path):
    """Training images like the real ones stay near the floor; unlike ones do not; too few give NaN."""
    cats = ["inclusion", "patches", "scratches"]
    real_set = realism.read_set(realism.list_set(real, "real", realism.cli.categories_from_config(None)))
    real_x = realism.data.resized(real_set.images, SIDE)
    like = realism.read_set(realism.list_set(make_train(tmp_path / "like", 3, n=60), "training",
                                             realism.cli.categories_from_config(None), with_masks=False))
    pool_x = realism.data.resized(like.images, SIDE)
    pool_groups = realism.data.group_indices(like, cats)
    floors = {name: row["floor"] for name, row in card_for(real, copy_set(real, tmp_path / "g"),
                                                             "--fwd_draws", 2)["fwd"].items()}
    ratios = rfwd.sample_ratios(real_set, real_x, pool_x, pool_groups, cats, floors, 4, seed=0, halves_draws=2,
                                draws=12)
    assert set(ratios) == {*cats, "overall"} and all(len(r) == 12 and np.isfinite(r).all() for r in ratios.values())
    assert 0.5 < np.median(ratios["overall"]) < 2.0 and len(set(ratios["overall"])) > 1
    noise = np.random.default_rng(0).uniform(0, 1, pool_x.shape)
    far = rfwd.sample_ratios(real_set, real_x, noise, pool_groups, cats, floors, 4, 0, 2, 12)
    assert far["overall"].min() > 2 * ratios["overall"].max() and far["overall"].min() > 2
    again = rfwd.sample_ratios(real_set, real_x, pool_x, pool_groups, cats, floors, 4, 0, 2, 12)
    assert all(np.array_equal(again[k], ratios[k]) for k in ratios)
    short = {c: idx[:3] for c, idx in pool_groups.items()}                     # half B has 4 images a category
    assert all(np.isnan(r).all() for r in rfwd.sample_ratios(real_set, real_x, pool_x, short, cats, floors, 4, 0, 2,
                                                              5).values())
    from evaluation.realism.reference import fwd_rows
    rows = fwd_rows(far | {"inclusion": np.array([1.0, 3.0, np.nan, 1.5])})
    assert rows["overall"]["met"] == 0.0 and rows["overall"]["draws"] == 12
    assert rows["inclusion"] == {"draws": 3, "median": 1.5, "p5": pytest.approx(1.05), "p95": pytest.approx(2.85),
                                 "met": pytest.approx(2 / 3)}


def test_haar_packets_are_the_orthonormal_two_by_two_transform():
    """Level 1 of the packet transform on 2x2 blocks: the mean and the three differences, orthonormal."""
    img = np.array([[[1.0, 2.0], [3.0, 5.0]]])
    coefficients = rfwd.packets(img, 1)[:, 0, 0]
    a, b, c, d = 1.0, 2.0, 3.0, 5.0
    assert coefficients.shape == (4,)
    assert coefficients[0] == pytest.approx((a + b + c + d) / 2)
    assert sorted(np.abs(coefficients[1:])) == pytest.approx(sorted(
        [abs(a + b - c - d) / 2, abs(a - b + c - d) / 2, abs(a - b - c + d) / 2]))
    assert np.sum(coefficients ** 2) == pytest.approx(np.sum(img ** 2))


def test_auto_level_keeps_packets_small():
    assert rfwd.auto_level(32) == 4 and rfwd.auto_level(64) == 4 and rfwd.auto_level(128) == 4
    assert rfwd.auto_level(200) == 5 and rfwd.auto_level(256) == 5


def make_train(root, seed, n=40):
    rng = np.random.default_rng(seed)
    for i in range(n):
        write_pair(root, f"{('In', 'Pa', 'Sc')[i % 3]}_{100 + i}", sample(rng, ("In", "Pa", "Sc")[i % 3])[0])
    return root


def test_memorisation_flags_copies_of_training_images(real, tmp_path):
    train = make_train(tmp_path / "train", 7)
    copies = tmp_path / "copies"
    train_files = sorted((train / "Source_Images").iterdir())
    for k, stem in enumerate(STEMS):   # generated "from real masks" but showing training images
        mask = np.asarray(Image.open(real / "Ground_truth" / f"{stem}.png")) > 0
        write_pair(copies, stem, np.asarray(Image.open(train_files[k % len(train_files)]), np.float64), mask)
    card = card_for(real, copies, "--train", train)
    m = card["memorisation"]["overall"]
    assert m["generated_median"] == pytest.approx(0, abs=1e-9) and m["fraction_below_real_p5"] == 1.0
    assert m["possible_memorisation"] is True
    assert card["images"]["generated"][0]["nn_train"].endswith("_100")
    fresh = card_for(real, make_set(tmp_path / "fresh", 99), "--train", train)
    assert fresh["memorisation"]["overall"]["possible_memorisation"] is False
    assert fresh["memorisation"]["overall"]["generated_median"] > 0.05
    assert not fresh["warnings"]


def test_real_image_identical_to_a_training_image_is_a_split_leak(real, tmp_path):
    train = make_train(tmp_path / "train", 7, n=10)
    write_pair(train, "In_999", np.asarray(Image.open(real / "Source_Images" / "In_3.png"), np.float64))
    card = card_for(real, copy_set(real, tmp_path / "gen"), "--train", train)
    assert card["images"]["leaked"] == ["In_3"]
    assert any("split leak" in w and "In_3" in w for w in card["warnings"])
    assert card["memorisation"]["inclusion"]["real_n"] == 7


def test_real_split_selects_the_test_part_and_its_training_part(real, tmp_path, capsys):
    split = make_split(STEMS, 0.5, seed=0)
    path = save_split(split, tmp_path / "split.json")
    gen = tmp_path / "gen"
    for stem in split["test"]:
        write_pair(gen, f"{stem}_s0", *sample(np.random.default_rng(3), stem))
    inputs = realism.load_inputs(realism.build_parser().parse_args(
        ["--real", str(real), "--real_split", str(path), "--generated", str(gen)]))
    assert inputs.real.stems == split["test"] and inputs.train.stems == split["train"]
    assert "without a matching" not in capsys.readouterr().out  # the other part's masks are not unmatched
    card = realism.build_card(inputs)
    assert all(card["fwd"][c]["paired"] for c in card["categories"])


def run_main(argv):
    with pytest.raises(SystemExit) as exc:
        run_cli(lambda: realism.main([str(a) for a in argv]))
    return exc.value.code


def one_error_line(capsys):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "Traceback" not in err[0]
    return err[0]


def test_empty_folder_is_one_line_error_and_writes_nothing(real, tmp_path, capsys):
    (tmp_path / "gen" / "Source_Images").mkdir(parents=True)
    out = tmp_path / "out"
    assert run_main(["--real", real, "--generated", tmp_path / "gen", "--out", out]) == 2
    assert "Source_Images" in one_error_line(capsys) and not out.exists()


def test_categories_absent_from_real_are_refused(tmp_path, capsys):
    real_in = make_set(tmp_path / "real", 0, stems=["In_1", "In_2", "In_3", "In_4"])
    gen = make_set(tmp_path / "gen", 1, stems=["In_1", "Sc_1"])
    out = tmp_path / "out"
    assert run_main(["--real", real_in, "--generated", gen, "--out", out]) == 2
    line = one_error_line(capsys)
    assert "scratches" in line and str(gen) in line and not out.exists()


def test_unmatched_masks_and_unreadable_images_are_refused(real, tmp_path, capsys):
    gen = copy_set(real, tmp_path / "gen")
    for path in (gen / "Ground_truth").iterdir():
        path.rename(path.with_name("x" + path.name))
    assert run_main(["--real", real, "--generated", gen, "--out", tmp_path / "o1"]) == 2
    assert "matches" in one_error_line(capsys) and not (tmp_path / "o1").exists()
    (gen / "Ground_truth").rename(gen / "masks")
    assert run_main(["--real", real, "--generated", gen, "--out", tmp_path / "o1"]) == 2
    assert "no Ground_truth/" in one_error_line(capsys) and not (tmp_path / "o1").exists()
    bad = copy_set(real, tmp_path / "bad")
    (bad / "Source_Images" / "In_2.png").write_bytes(b"not a png")
    assert run_main(["--real", real, "--generated", bad, "--out", tmp_path / "o2"]) == 2
    assert "In_2.png" in one_error_line(capsys) and not (tmp_path / "o2").exists()


def test_cli_writes_markdown_csv_json_and_picture(real, tmp_path, capsys):
    gen = copy_set(real, tmp_path / "gen", lambda im: im * 0.7)
    train = make_train(tmp_path / "train", 7, n=12)
    assert realism.main(["--real", str(real), "--generated", str(gen), "--train", str(train), "--threads", "1",
                         "--fwd_draws", "2"]) == 0
    out = gen / "realism"
    assert sorted(p.name for p in out.iterdir()) == ["realism.csv", "realism.json", "realism.md", "realism.png"]
    text = (out / "realism.md").read_text()
    assert "## Brightness" in text and "## Fréchet Wavelet Distance" in text and "## Memorisation" in text
    rows = list(csv.DictReader((out / "realism.csv").open()))
    assert set(rows[0]) == {"category", "metric", "real", "generated", "value"}
    assert {r["category"] for r in rows} == {"inclusion", "patches", "scratches", "overall"}
    ks = next(r for r in rows if r["category"] == "overall" and r["metric"] == "brightness_ks")
    card = json.loads((out / "realism.json").read_text(), parse_constant=lambda c: pytest.fail(f"JSON has {c}"))
    assert float(ks["value"]) == pytest.approx(card["brightness"]["overall"]["ks"], rel=1e-5)
    assert card["settings"]["fwd"]["level"] == 4 and len(card["fwd"]["overall"]["floor_draws"]) == 2
    assert (out / "realism.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    printed = capsys.readouterr().out
    assert "realism.md" in printed and "overall" in printed


def test_real_dataset_card(saliency_root, tmp_path):
    """A small card on SD-Saliency-900 pairs: 6 per class real, darkened copies generated, 6 per class train."""
    real, gen, train = tmp_path / "real", tmp_path / "gen", tmp_path / "train"
    for d in (real, gen, train):
        (d / "Source_Images").mkdir(parents=True)
        (d / "Ground_truth").mkdir()
    for prefix in ("In", "Pa", "Sc"):
        for i in range(1, 13):
            stem, dst = f"{prefix}_{i}", real if i <= 6 else train
            os.symlink(saliency_root / "Source Images" / f"{stem}.bmp", dst / "Source_Images" / f"{stem}.bmp")
            os.symlink(saliency_root / "Ground truth" / f"{stem}.png", dst / "Ground_truth" / f"{stem}.png")
            if i <= 6:
                image = np.asarray(Image.open(saliency_root / "Source Images" / f"{stem}.bmp").convert("L"), float)
                mask = np.asarray(Image.open(saliency_root / "Ground truth" / f"{stem}.png")) > 0
                write_pair(gen, stem, image - 40, mask)
    assert realism.main(["--real", str(real), "--generated", str(gen), "--train", str(train), "--size", "64",
                         "--out", str(tmp_path / "card")]) == 0
    card = json.loads((tmp_path / "card" / "realism.json").read_text())
    assert card["inputs"]["n_real"] == 18 and card["settings"]["size"] == 64
    assert card["brightness"]["overall"]["generated_mean"] < card["brightness"]["overall"]["real_mean"] - 0.1
    assert card["images"]["leaked"] == []


def _fake_card(ks: float) -> dict:
    cats = ["inclusion", "overall"]
    cell = {"ks": ks, "spread_ratio": 0.5, "ratio": 1.25}
    return {"categories": cats, **{s: {c: dict(cell) for c in cats} for s in ("brightness", "contrast", "cnr", "fwd")},
            "targets": [{"met": True}, {"met": False}, {"met": True}]}


def test_compare_puts_cards_side_by_side(tmp_path, capsys):
    from evaluation.realism import compare

    for name, ks in (("a", 0.5), ("b", 0.125)):
        (tmp_path / name / "realism").mkdir(parents=True)
        (tmp_path / name / "realism" / "realism.json").write_text(json.dumps(_fake_card(ks)))
    assert compare.main([str(tmp_path / "a" / "realism"), str(tmp_path / "b" / "realism"),
                         "--out", str(tmp_path / "cmp")]) == 0
    lines = (tmp_path / "cmp.md").read_text().splitlines()
    assert lines[2].startswith("| a | 0.50 / 0.50 |") and lines[3].startswith("| b | 0.12 / 0.12 |")
    assert lines[2].endswith("| 2/3 |")
    csv_rows = (tmp_path / "cmp.csv").read_text().splitlines()
    assert csv_rows[0].startswith("run,brightness KS In,brightness KS all,") and csv_rows[2].startswith("b,0.125,")
    assert capsys.readouterr().out.startswith("| run |")
    assert compare.main([str(tmp_path / "a" / "realism"), str(tmp_path / "b" / "realism"), "--curve", "1", "2",
                         "--out", str(tmp_path / "curve")]) == 0
    assert Image.open(tmp_path / "curve.png").size[0] > 500
    with pytest.raises(UserError, match="one number per card"):
        compare.main([str(tmp_path / "a" / "realism"), "--curve", "1", "2", "--out", str(tmp_path / "c")])


def test_compare_refuses_what_is_not_a_card(tmp_path):
    from evaluation.realism import compare

    (tmp_path / "x.json").write_text("{}")
    for bad in (tmp_path / "missing", tmp_path / "x.json"):
        with pytest.raises(UserError, match="realism card") as err:
            compare.main([str(bad)])
        assert "\n" not in str(err.value)
    with pytest.raises(UserError, match="--labels"):
        compare.main([str(tmp_path / "x.json"), "--labels", "a", "b"])


def test_grid_shows_mask_real_and_each_generated_set(real, tmp_path):
    from evaluation.realism import grid

    dark = copy_set(real, tmp_path / "dark", lambda im: im * 0 + 10)
    renamed = tmp_path / "bright"
    for path in sorted((real / "Source_Images").iterdir()):     # In_1 -> In_1_s0, In_1_s1: the first sample shows
        mask = np.asarray(Image.open(real / "Ground_truth" / path.name)) > 0
        for k, level in ((0, 240), (1, 120)):
            write_pair(renamed, f"{path.stem}_s{k}", np.full((SIDE, SIDE), level), mask)
    out = tmp_path / "grid.png"
    assert grid.main(["--real", str(real), "--generated", str(dark), str(renamed), "--per_category", "2",
                      "--thumb", "32", "--out", str(out)]) == 0
    sheet = np.asarray(Image.open(out).convert("L")).astype(int)
    assert sheet.shape == (22 + 4 + 6 * 36, 4 + 4 * 36)                # 3 categories x 2 rows, 4 columns
    tile = lambda r, c: sheet[26 + r * 36: 26 + r * 36 + 32, 4 + c * 36: 4 + c * 36 + 32]  # noqa: E731
    for r in range(6):
        assert abs(tile(r, 2).mean() - 10) < 2 and abs(tile(r, 3).mean() - 240) < 2
        assert set(np.unique(tile(r, 0))) <= {0, 255}                  # the mask, kept binary


def test_grid_refuses_sets_without_common_masks(real, tmp_path):
    from evaluation.realism import grid

    other = make_set(tmp_path / "other", 1, stems=["In_90", "Pa_91"])
    with pytest.raises(UserError, match="no mask is in the real set"):
        grid.main(["--real", str(real), "--generated", str(other), "--out", str(tmp_path / "g.png")])
    assert not (tmp_path / "g.png").exists()


# -- what a real sample scores ---------------------------------------------------------------------------------
def _groups(cats, n):
    return {c: np.arange(i * n, (i + 1) * n) for i, c in enumerate(cats)} | {"overall": np.arange(len(cats) * n)}


def test_real_sample_reference_scores_new_real_images_as_the_generated_set_is_scored():
    from evaluation.realism.reference import reference_table

    cats, rng = ["inclusion", "patches", "scratches"], np.random.default_rng(0)
    real_b, real_cnr = rng.normal(0.5, 0.1, 90), rng.normal(2.0, 0.5, 90)
    train_b, train_cnr = rng.normal(0.5, 0.1, 900), rng.normal(2.0, 0.5, 900)
    train_b[600:] += 0.3                                          # training scratches: another kind of steel
    table, warnings = reference_table(real_b, real_cnr, _groups(cats, 30), train_b, train_cnr, _groups(cats, 300),
                                      {c: 30 for c in cats}, seed=1, draws=100)
    rows = table["rows"]
    assert not warnings and table["draws"] == 100
    assert rows["inclusion"]["n"] == 30 and rows["inclusion"]["pool"] == 300
    assert rows["overall"]["n"] == 90 and rows["overall"]["pool"] == 900
    # same distribution: KS at n = 30 vs 30 misses 0.2 often, the spread and CNR lines rarely
    assert 0.3 < rows["inclusion"]["ks_met"] < 0.95 and 0.15 < rows["inclusion"]["ks_median"] < 0.25
    assert 0.85 < rows["patches"]["spread_ratio_median"] < 1.15 and rows["patches"]["cnr_ratio_met"] > 0.9
    assert rows["scratches"]["ks_met"] == 0.0 and rows["scratches"]["ks_median"] > 0.8
    t = table["targets_met"]
    assert t["of"] == 12 and t["p5"] <= t["mean"] <= t["p95"] <= 12
    assert 0 <= t["all_met"] <= rows["scratches"]["ks_met"] == 0.0          # scratch KS never met: never all
    again, _ = reference_table(real_b, real_cnr, _groups(cats, 30), train_b, train_cnr, _groups(cats, 300),
                               {c: 30 for c in cats}, seed=1, draws=100)
    assert again == table


def test_real_sample_reference_leaves_out_a_category_without_enough_training_images():
    from evaluation.realism.reference import reference_table

    cats, rng = ["inclusion", "patches"], np.random.default_rng(0)
    groups = {"inclusion": np.arange(0, 40), "patches": np.arange(40, 50), "overall": np.arange(50)}
    table, warnings = reference_table(rng.random(20), np.full(20, np.nan), _groups(cats, 10), rng.random(50),
                                      np.full(50, np.nan), groups, {"inclusion": 10, "patches": 20}, draws=20)
    assert len(warnings) == 1 and "patches" in warnings[0] and "10 training image(s) for 20" in warnings[0]
    assert np.isnan(table["rows"]["patches"]["ks_met"]) and table["rows"]["overall"]["n"] == 10
    assert np.isnan(table["rows"]["inclusion"]["cnr_ratio_met"])          # no masks: no CNR reference
    assert table["targets_met"]["of"] == 4                                 # KS and spread of inclusion and overall


def test_card_reports_the_real_sample_reference_from_the_split_training_pairs(tmp_path, capsys):
    stems = [f"{c}_{i}" for c in ("In", "Pa", "Sc") for i in range(1, 21)]
    root = make_set(tmp_path / "all", 0, stems=stems)
    split = make_split(stems, 0.3, seed=0)
    path = save_split(split, tmp_path / "split.json")
    n_sc = sum(s.startswith("Sc") for s in split["test"])
    gen = tmp_path / "gen"
    for stem in split["test"]:
        write_pair(gen, stem, *sample(np.random.default_rng(hash(stem) % 1000), stem))
    out = tmp_path / "card"
    assert realism.main(["--real", str(root), "--real_split", str(path), "--generated", str(gen), "--out", str(out),
                         "--ref_draws", "30", "--fwd_draws", "1"]) == 0
    card = json.loads((out / "realism.json").read_text())
    ref = card["reference"]
    assert ref["draws"] == 30 and ref["rows"]["scratches"]["n"] == n_sc and ref["rows"]["scratches"]["pool"] == 20 - n_sc
    assert ref["targets_met"]["of"] == 12                       # the split's training pairs have masks: CNR too
    met = sum(t["met"] is True for t in card["targets"] if not t["target"].startswith(("same-size", "no possible")))
    from evaluation.realism.reference import generated_met
    assert generated_met(card) == met
    text = (out / "realism.md").read_text()
    assert "## What a real sample scores" in text and f"the generated set meets {met}." in text
    rows = list(csv.DictReader((out / "realism.csv").open()))
    assert any(r["metric"] == "real_sample_ks_met" and r["category"] == "overall" for r in rows)
    assert {r["metric"] for r in rows if r["category"] == "inclusion"} >= {"real_sample_fwd_ratio_median",
                                                                           "real_sample_fwd_ratio_met"}
    fwd_ref = ref["fwd"]
    assert set(fwd_ref) == {"inclusion", "patches", "scratches", "overall"}
    assert all(r["draws"] == 30 and 0 <= r["met"] <= 1 and r["p5"] <= r["median"] <= r["p95"] for r in fwd_ref.values())
    assert "real sample FWD/floor median (p5-p95)" in text
    printed = capsys.readouterr().out
    assert "a real sample of the same size meets" in printed and "a real sample's FWD/floor" in printed
    from evaluation.realism.reference import counted_met
    rate = {"KS": lambda c: ref["rows"][c]["ks_met"], "spread ratio": lambda c: ref["rows"][c]["spread_ratio_met"],
            "CNR": lambda c: ref["rows"][c]["cnr_ratio_met"], "same-size FWD": lambda c: fwd_ref[c]["met"],
            "no possible memorisation": lambda c: None}
    assert all(t["real_sample_met"] == rate[t["key"]](t["category"]) for t in card["targets"])
    k, n = counted_met(card)
    assert n == 20 - sum(t["real_sample_met"] is not None and t["real_sample_met"] < 0.5 for t in card["targets"])
    assert f"the generated set meets {k} of {n}." in text and f"(and memorisation): this set meets {k} of {n}" in printed
    assert realism.main(["--real", str(root), "--real_split", str(path), "--generated", str(gen), "--out",
                         str(tmp_path / "fwd_only"), "--ref_draws", "0", "--ref_fwd_draws", "5", "--fwd_draws", "1"]) == 0
    only = json.loads((tmp_path / "fwd_only" / "realism.json").read_text())["reference"]
    assert only["targets_met"] is None and only["fwd"]["overall"]["draws"] == 5
    text = (tmp_path / "fwd_only" / "realism.md").read_text()
    assert "## What a real sample scores" in text and "KS median" not in text and "FWD/floor median" in text
    assert realism.main(["--real", str(root), "--real_split", str(path), "--generated", str(gen), "--out",
                         str(tmp_path / "none"), "--ref_draws", "0", "--ref_fwd_draws", "0", "--fwd_draws", "1"]) == 0
    assert json.loads((tmp_path / "none" / "realism.json").read_text())["reference"] is None
    assert "What a real sample" not in (tmp_path / "none" / "realism.md").read_text()


def test_real_sample_cli_scores_a_split_before_anything_is_generated(tmp_path, capsys):
    from evaluation.realism import real_sample

    stems = [f"{c}_{i}" for c in ("In", "Pa", "Sc") for i in range(1, 21)]
    root = make_set(tmp_path / "all", 0, stems=stems)
    path = save_split(make_split(stems, 0.3, seed=0), tmp_path / "split.json")
    assert real_sample.main(["--real", str(root), "--real_split", str(path), "--ref_draws", "20",
                             "--ref_fwd_draws", "6", "--fwd_draws", "1"]) == 0
    result = json.loads((tmp_path / "real_sample_split.json").read_text())
    ref = result["reference"]
    assert ref["draws"] == 20 and ref["targets_met"]["of"] == 12 and result["inputs"]["n_train"] == 60 - 18
    assert ref["fwd"]["overall"]["draws"] == 6 and set(result["floors"]) == {"inclusion", "patches", "scratches",
                                                                             "overall"}
    text = (tmp_path / "real_sample_split.md").read_text()
    assert "KS median" in text and "FWD/floor median" in text and "generated set meets" not in text
    assert "| generated |" not in text and text in capsys.readouterr().out
    with pytest.raises(UserError, match="both 0"):
        real_sample.main(["--real", str(root), "--real_split", str(path), "--ref_draws", "0", "--ref_fwd_draws", "0",
                          "--out", str(tmp_path / "none")])
    assert not list(tmp_path.glob("none*"))


def test_compare_shows_the_real_sample_reference_where_a_card_has_one(tmp_path):
    from evaluation.realism import compare

    plain, with_ref = _fake_card(0.5), _fake_card(0.125)
    row = {"ks_met": 0.5, "spread_ratio_met": 1.0, "cnr_ratio_met": 1.0}
    unknown = {"ks_met": None, "spread_ratio_met": None, "cnr_ratio_met": None}     # NaN, as JSON stores it
    with_ref["reference"] = {"draws": 10, "rows": {"inclusion": row, "overall": row, "patches": unknown},
                             "targets_met": {"mean": 4.5, "p5": 3, "p95": 6, "of": 6}}
    for name, card in (("a", plain), ("b", with_ref)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "realism.json").write_text(json.dumps(card))
    assert compare.main([str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path / "cmp")]) == 0
    lines = (tmp_path / "cmp.md").read_text().splitlines()
    assert lines[0].endswith("| targets met | brightness and CNR targets: this set / a real sample | targets met of "
                             "those a real sample meets in ≥ 50 % of draws |")
    # b: KS 0.125 met, spread 0.5 not, CNR 1.25 met, in both rows
    assert lines[2].endswith("| 2/3 | – | – |") and lines[3].endswith("| 2/3 | 4/6 vs 4.5 | 2/3 |")


def test_training_folder_masks_are_used_where_they_exist_and_no_image_is_dropped(real, tmp_path):
    train = make_train(tmp_path / "train", 7, n=30)
    rng = np.random.default_rng(5)
    for stem in ("In_100", "Sc_102", "Pa_104"):                    # masks for three training images only
        write_pair(train, stem, *sample(rng, stem))
    (train / "Ground_truth" / "In_999.png").write_bytes((train / "Ground_truth" / "In_100.png").read_bytes())
    args = realism.build_parser().parse_args(["--real", str(real), "--generated", str(copy_set(real, tmp_path / "g")),
                                              "--train", str(train), "--ref_draws", "10"])
    inputs = realism.load_inputs(args)
    assert len(inputs.train) == 30 and sum(m is not None for m in inputs.train.masks) == 3
    card = realism.build_card(inputs)
    assert card["inputs"]["n_train"] == 30 and card["reference"]["targets_met"] is not None


def test_compare_groups_name_targets_by_their_key_whatever_the_wording(real, tmp_path):
    from evaluation.realism import compare

    card = card_for(real, make_set(tmp_path / "gen", 0, contrast=0.5))          # halved CNR: CNR targets missed
    assert [t["key"] for t in card["targets"][:4]] == ["KS", "spread ratio", "CNR", "same-size FWD"]
    reworded = json.loads(json.dumps(card))
    for t in reworded["targets"]:
        t["target"] = "reworded: " + t["target"]
    old = json.loads(json.dumps(card))
    for t in old["targets"]:
        del t["key"]                                                            # a card written before the keys
    for c in (card, reworded, old):
        c["targets"] = [t for t in c["targets"] if t["category"] == "scratches"]
    rows = compare.group_rows([card, reworded, old, json.loads(json.dumps(card))], [("x", 2), ("y", 2)])
    assert rows[0]["met in fewer than all cards"] == rows[1]["met in fewer than all cards"]
    assert "Sc CNR 0/2" in rows[0]["met in fewer than all cards"]


def test_compare_groups_give_the_mean_targets_met_and_the_targets_missed_in_some_cards(tmp_path, capsys):
    from evaluation.realism import compare

    names = ("brightness KS <= 0.2", "CNR >= 0.9 x real", "same-size FWD <= 2 x real-vs-real floor")
    hits = {"a0": (1, 1, 1), "a1": (1, 0, 1), "b0": (0, 1, 1), "b1": (0, 1, 0), "b2": (0, 1, 1)}
    for i, (name, pattern) in enumerate(hits.items()):
        card = _fake_card(0.5)
        card["fwd"]["overall"]["ratio"] = 1.0 + i / 10
        card["targets"] = [{"category": "scratches", "target": t, "met": bool(h)} for t, h in zip(names, pattern)]
        (tmp_path / name).mkdir()
        (tmp_path / name / "realism.json").write_text(json.dumps(card))
    cards = [str(tmp_path / n) for n in hits]
    assert compare.main(cards + ["--groups", "A=2", "B x=3", "--out", str(tmp_path / "cmp")]) == 0
    lines = (tmp_path / "cmp_groups.md").read_text().splitlines()
    assert lines[2] == "| A | 2 | 2.50 of 3 (2–3, 0.71) | 1.05 | Sc CNR 1/2 |"
    assert lines[3] == "| B x | 3 | 1.67 of 3 (1–2, 0.58) | 1.30 | Sc KS 0/3; Sc same-size FWD 2/3 |"
    assert (tmp_path / "cmp_groups.csv").read_text().startswith("group,cards,targets met mean,min,max,sd,of,")
    assert "| B x | 3 |" in capsys.readouterr().out
    for bad, message in ((["A=2", "B=2"], "4 cards in the groups for 5"), (["A2", "B=3"], "NAME=N"),
                         (["A=0", "B=5"], "NAME=N")):
        with pytest.raises(UserError, match=message):
            compare.main(cards + ["--groups", *bad])


def test_counted_targets_leave_out_those_a_real_sample_misses_in_most_draws(tmp_path, capsys):
    from evaluation.realism import compare
    from evaluation.realism.reference import counted_met

    def card(ks_met: bool) -> dict:
        c = _fake_card(0.5)
        c["reference"] = {"draws": 10, "targets_met": {"mean": 4.0, "p5": 3, "p95": 5, "of": 5},
                          "rows": {"inclusion": {"ks_met": 0.2, "spread_ratio_met": 0.9, "cnr_ratio_met": 0.5},
                                   "overall": {"ks_met": 1.0, "spread_ratio_met": 1.0, "cnr_ratio_met": None}},
                          "fwd": {"inclusion": {"met": 0.4}, "overall": {"met": 1.0}}}
        c["targets"] = [{"category": "inclusion", "key": "KS", "met": ks_met},              # 20 %: left out
                        {"category": "inclusion", "key": "spread ratio", "met": False},     # 90 %: counted
                        {"category": "inclusion", "key": "CNR", "met": True},               # 50 %: counted
                        {"category": "inclusion", "key": "same-size FWD", "met": False},    # 40 %: left out
                        {"category": "inclusion", "key": "no possible memorisation", "met": True},  # no rate
                        {"category": "overall", "target": "CNR >= 0.9 x real", "met": True}]  # no key, rate unknown
        return c

    assert counted_met(card(True)) == (3, 4) == counted_met(card(False))
    assert counted_met(_fake_card(0.5)) is None
    for name, ks in (("a", True), ("b", False)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "realism.json").write_text(json.dumps(card(ks)))
    assert compare.main([str(tmp_path / "a"), str(tmp_path / "b"), "--groups", "x=2", "--out", str(tmp_path / "c")]) == 0
    lines = (tmp_path / "c.md").read_text().splitlines()
    assert lines[0].endswith("| targets met of those a real sample meets in ≥ 50 % of draws |")
    assert lines[2].endswith("| 4/6 | 1/5 vs 4.0 | 3/4 |") and lines[3].endswith("| 3/6 | 1/5 vs 4.0 | 3/4 |")
    groups = (tmp_path / "c_groups.md").read_text().splitlines()
    assert "| targets met of those a real sample meets in ≥ 50 % of draws, mean |" in groups[0]
    assert groups[2].startswith("| x | 2 | 3.50 of 6 (3–4, 0.71) | 3.00 of 4 | 1.25 |")
