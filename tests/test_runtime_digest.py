"""runtime.digest is the one home of digests and fingerprints: its values are stable (the study's stamps and the
protocols' finished runs written before it keep matching) and no other module hashes files on its own."""
from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

import pytest

from runtime import digest

REPO = Path(__file__).resolve().parents[1]
T = 1_700_000_000_000_000_000  # a fixed modification time (ns)


@pytest.fixture
def tree(tmp_path, monkeypatch) -> Path:
    """``a/x.png``, ``a/sub/y.txt``, ``a/.hidden`` and ``b.json`` with fixed sizes and times; cwd is the tree."""
    monkeypatch.chdir(tmp_path)
    for i, (name, data) in enumerate({"a/x.png": b"xxx", "a/sub/y.txt": b"yyyy", "a/.hidden": b"hhhhh",
                                      "b.json": b"{}"}.items()):
        path = Path(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        os.utime(path, ns=(T + i, T + i))
    return tmp_path


def test_the_values_are_those_the_study_stamps_were_written_with(tree):
    """The hex values the study's former stamp helpers gave for this tree: old stamps stay valid."""
    assert digest.path_fingerprint("b.json") == "5b491c1830dbf0fccd78b3d23ad74080f72dd37e1195a2ae3d508fed05b0b91b"
    assert digest.path_fingerprint("a") == "c55b08420028997199558c2b36429a480de8de8566ddc0303e3bf05846d6af90"
    assert digest.path_fingerprint("missing") is None
    assert (digest.json_sha256({"b": [1, Path("p/q")], "a": None})
            == "6aaf4bb0641a5c77dcb0a615b5cf2cc21be8ebfdb9f025d891ec7efdeac7137a")
    assert digest.file_sha256_or_none("missing") is None
    assert digest.file_sha256_or_none("b.json") == hashlib.sha256(b"{}").hexdigest()


def test_fingerprints_follow_what_stat_says(tree):
    before = digest.path_fingerprint("a")
    os.utime("a/x.png", ns=(T + 9, T + 9))
    after = digest.path_fingerprint("a")
    assert before != after
    os.utime("a/sub/y.txt", ns=(T + 9, T + 9))  # below the folder: the recursive fingerprint sees it
    assert digest.path_fingerprint("a") != after


def test_folders_digest_follows_content_not_stat_or_place(tree, tmp_path):
    before = digest.folders_digest([Path("a"), Path("missing")])
    os.utime("a/x.png", ns=(T + 9, T + 9))          # a copy with new times: same digest
    Path("a/.other").write_bytes(b"x")               # dotfiles and sub-folders are not data
    Path("a/sub/y.txt").write_bytes(b"changed")
    assert digest.folders_digest([Path("a"), Path("missing")]) == before
    moved = tmp_path / "elsewhere" / "a"
    moved.parent.mkdir()
    Path("a").rename(moved)                          # the same folder somewhere else: same digest
    assert digest.folders_digest([moved, Path("missing")]) == before
    (moved / "x.png").write_bytes(b"other pixels")   # new bytes: a new digest
    assert digest.folders_digest([moved, Path("missing")]) != before


def test_the_protocols_earlier_run_signatures_stay_accepted(tree, monkeypatch):
    """evaluation.protocols' earlier reuse signatures (paths, sizes, modification times), as they were computed
    before it used runtime.digest, are still accepted; a run trained with other threads is reused (the third:
    as recorded when threads counted)."""
    from evaluation import protocols

    class Pair:
        def __init__(self, image: str, mask: str) -> None:
            self.image, self.mask = Path(image), Path(mask)

    pairs = [Pair("a/x.png", "b.json"), Pair("a/sub/y.txt", "a/x.png")]
    cfg = {"train": {"lr": 0.001, "real_share": None}, "model": {"arch": "msinet"}}
    monkeypatch.setattr(protocols, "to_plain", lambda c: json.loads(json.dumps(c)))
    h = hashlib.sha256(json.dumps({"train": {"lr": 0.001}, "model": {"arch": "msinet"}}, sort_keys=True).encode())
    for p in pairs:
        h.update(f"{p.image.resolve()}|{p.mask.resolve()}|{p.image.stat().st_size}|{p.image.stat().st_mtime_ns}\n"
                 .encode())
    assert protocols._signatures(cfg, pairs)[1:] == (h.hexdigest()[:20], h.hexdigest()[:20])
    threaded = {**cfg, "train": {**cfg["train"], "num_threads": 3}}
    _, stat, legacy = protocols._signatures(threaded, pairs)
    assert stat == h.hexdigest()[:20] and legacy != stat


def test_a_run_signature_follows_the_pairs_content_not_their_times_or_folder(tree, monkeypatch):
    """The signature a new run records: the same bytes copied elsewhere with new modification times give the
    same one (a re-copied dataset does not retrain every detector); a changed mask or image gives a new one."""
    import shutil

    from evaluation import protocols

    class Pair:
        def __init__(self, image: Path, mask: Path) -> None:
            self.image, self.mask = image, mask

    monkeypatch.setattr(protocols, "to_plain", lambda c: json.loads(json.dumps(c)))
    cfg = {"train": {"lr": 0.001, "num_threads": 1}, "model": {"arch": "msinet"}}
    here = [Pair(Path("a/x.png"), Path("b.json")), Pair(Path("a/sub/y.txt"), Path("a/.hidden"))]
    first = protocols._signatures(cfg, here)
    shutil.copytree("a", "copy/a")
    shutil.copy("b.json", "copy/b.json")
    for path in Path("copy").rglob("*"):
        os.utime(path, ns=(T + 10**12, T + 10**12))
    there = [Pair(Path("copy") / p.image, Path("copy") / p.mask) for p in here]
    again = protocols._signatures({**cfg, "train": {**cfg["train"], "num_threads": 4}}, there)
    assert again[0] == first[0]
    assert again[1] != first[1]                       # the stat signature alone would have retrained
    Path("copy/b.json").write_bytes(b"[]")            # same size, other bytes: a new mask
    assert protocols._signatures(cfg, there)[0] != first[0]


def test_the_cached_file_digest_notices_a_rewritten_file(tree):
    """file_sha256_cached hashes a file once, and again when it is rewritten."""
    assert digest.file_sha256_cached("b.json") == hashlib.sha256(b"{}").hexdigest()
    Path("b.json").write_bytes(b"[1]")
    assert digest.file_sha256_cached("b.json") == hashlib.sha256(b"[1]").hexdigest()
    assert digest.content_line("n", "b.json", "a/x.png") == (
        f"n|{hashlib.sha256(b'[1]').hexdigest()}|{hashlib.sha256(b'xxx').hexdigest()}\n")


def test_no_other_module_fingerprints_files_or_hashes_json():
    """Fingerprint lines (``|size|mtime``) and canonical-JSON hashes are written in runtime/digest.py alone."""
    pattern = re.compile(r"st_mtime_ns\}|sha256\(json\.dumps|sha256\(text\.encode")
    places = sorted(str(p.relative_to(REPO)) for folder in ("dataset", "evaluation", "inference", "maskgen",
                                                             "metrics", "runtime", "training", "ldm")
                    for p in (REPO / folder).rglob("*.py") if pattern.search(p.read_text()))
    assert places == ["runtime/digest.py"], places


def test_yaml_values_digest_ignores_comments_and_layout_but_not_values(tmp_path):
    from runtime.digest import yaml_values_sha256_or_none

    a, b, c = tmp_path / "a.yaml", tmp_path / "b.yaml", tmp_path / "c.yaml"
    a.write_text("train:\n  epochs: 10   # chosen on validation\n  lr: 0.003\n")
    b.write_text("# the detector\ntrain: {lr: 0.003, epochs: 10}\n")
    c.write_text("train: {lr: 0.003, epochs: 11}\n")
    assert yaml_values_sha256_or_none(a) == yaml_values_sha256_or_none(b) != yaml_values_sha256_or_none(c)
    assert yaml_values_sha256_or_none(tmp_path / "missing.yaml") is None
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [unclosed\n")
    assert yaml_values_sha256_or_none(bad) == digest.file_sha256(bad)
