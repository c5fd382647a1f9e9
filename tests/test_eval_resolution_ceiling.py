"""evaluation.resolution_ceiling: contrast left after a generator-resolution round trip."""
import json

import numpy as np
import pytest
from PIL import Image

from evaluation import resolution_ceiling as rc
from runtime.errors import UserError


def write_pair(root, stem, image, mask):
    for sub in ("Source_Images", "Ground_truth"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(root / "Source_Images" / f"{stem}.png")
    Image.fromarray(mask.astype(np.uint8) * 255).save(root / "Ground_truth" / f"{stem}.png")


def thin_line_and_blob(root, n=3, size=120):
    rng = np.random.default_rng(0)
    for i in range(n):
        bg = 110 + rng.normal(0, 3, (size, size))
        line = np.zeros((size, size), bool)
        line[20:100, 40 + 10 * i] = True                     # a 1-pixel scratch
        write_pair(root, f"Sc_{i + 1}", np.where(line, bg + 60, bg), line)
        blob = np.zeros((size, size), bool)
        blob[30 + 5 * i:80, 30:80] = True
        write_pair(root, f"Pa_{i + 1}", np.where(blob, bg - 40, bg), blob)


def test_round_trip_keeps_size_and_only_blurs():
    img = np.tile(np.linspace(0, 255, 60, dtype=np.float32), (60, 1)).astype(np.uint8)
    out = rc.round_trip(img, 30)
    assert out.shape == img.shape and out.dtype == np.uint8
    assert np.abs(out.astype(int) - img).mean() < 3        # a smooth ramp survives
    assert np.array_equal(rc.round_trip(img, 60), img)     # same size: nothing changes
    with pytest.raises(UserError, match="not square"):
        rc.round_trip(img[:40], 30)


def test_thin_scratches_lose_contrast_blobs_keep_it(tmp_path, capsys):
    thin_line_and_blob(tmp_path / "real")
    out = tmp_path / "ceiling.json"
    pic = tmp_path / "ceiling.png"
    assert rc.main(["--real", str(tmp_path / "real"), "--sizes", "24", "60", "--out", str(out),
                    "--picture", str(pic), "--show", "Sc_1", "Pa_2"]) == 0
    table = json.loads(out.read_text())
    stored, low, mid = table["stored"], table["24 px"], table["60 px"]
    assert low["scratches"] < 0.5 * stored["scratches"]              # the 1-px line is smeared away
    assert low["scratches"] < mid["scratches"] < stored["scratches"]
    kept = {c: low[c] / stored[c] for c in ("patches", "scratches")}
    assert kept["patches"] > 1.5 * kept["scratches"]                 # the blob keeps more of its contrast
    assert "| 24 px |" in capsys.readouterr().out
    assert Image.open(pic).size == (4 * 160, 2 * 160)               # mask | stored | 24 | 60, two rows
    with pytest.raises(UserError, match="Sc_9"):
        rc.main(["--real", str(tmp_path / "real"), "--sizes", "24", "--picture", str(pic), "--show", "Sc_9"])


def test_a_non_square_image_is_named(tmp_path):
    thin_line_and_blob(tmp_path, n=1)
    write_pair(tmp_path, "In_1", np.full((40, 60), 100), np.ones((40, 60), bool))
    with pytest.raises(UserError, match=r"In_1\.png: the image is 60x40, not square"):
        rc.main(["--real", str(tmp_path), "--sizes", "16"])
