"""app.py's parts without a browser: mask canvas, kept pairs, CLI checks, error wrapping."""
from __future__ import annotations

import json
import zipfile

import gradio as gr
import numpy as np
import pytest
import torch
from PIL import Image

from runtime.errors import UserError
from runtime.lock import FolderLock
from webapp import app
from webapp.canvas import canvas_side, editor_value, mask_from_editor, mask_from_upload
from webapp.handlers import guarded
from webapp.keep import KeptPairs


@pytest.mark.parametrize("res", [8, 32, 256])
def test_canvas_round_trip_and_half_block_rule(res):
    side = canvas_side(res)
    assert side % res == 0 and side >= 384
    mask = np.zeros((res, res), bool)
    mask[1:4, 2:7] = True
    assert np.array_equal(mask_from_editor(editor_value(mask, res), res), mask)
    # a model pixel is in the mask when at least half of its block is painted
    k = side // res
    composite = np.zeros((side, side, 3), np.uint8)
    composite[:k, : (k + 1) // 2] = 255    # half of pixel (0, 0)
    composite[k:2 * k, k: k + k // 2 - 1] = 255  # less than half of pixel (1, 1)
    got = mask_from_editor({"composite": composite}, res)
    assert got[0, 0] and not got[1, 1] and got.sum() == 1


def test_canvas_bad_input_messages(tmp_path):
    with pytest.raises(UserError, match="no mask drawn"):
        mask_from_editor({"background": None, "layers": [], "composite": None}, 32)
    with pytest.raises(UserError, match="mask is empty"):
        mask_from_editor(editor_value(None, 32) | {"composite": np.zeros((384, 384, 3), np.uint8)}, 32)
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"not a png")
    with pytest.raises(UserError, match="cannot read image"):
        mask_from_upload(junk, 32)
    black = tmp_path / "black.png"
    Image.fromarray(np.zeros((40, 40), np.uint8)).save(black)
    with pytest.raises(UserError, match="no white"):
        mask_from_upload(black, 32)
    # a wide mask is centre-cropped to a square, then resized (as infer.py reads masks)
    wide = np.zeros((32, 64), np.uint8)
    wide[:, 16:32] = 255
    Image.fromarray(wide).save(tmp_path / "wide.png")
    got = mask_from_upload(tmp_path / "wide.png", 16)
    assert got[:, :8].all() and not got[:, 8:].any()


def test_kept_pairs_are_a_paired_dataset(tmp_path):
    settings = {"checkpoint_sha256": "a" * 64, "sampler": "per image"}
    kept = KeptPairs(tmp_path / "kept", settings)
    mask = torch.zeros(8, 8, dtype=torch.bool)
    mask[2:5, 2:5] = True
    names = [kept.add(prefix, torch.rand(3, 8, 8), mask, {"seed": k, "category": prefix})
             for k, prefix in enumerate(["In", "Sc", "In"])]
    assert names == ["In_app_0001", "Sc_app_0002", "In_app_0003"]
    root = tmp_path / "kept"
    record = json.loads((root / "generation.json").read_text())
    assert record["settings"] == settings and sorted(record["images"]) == sorted(names)
    assert not list(root.glob("generation.rank*.json")) and not list(root.rglob(".*.tmp"))
    assert np.array_equal(np.asarray(Image.open(root / "Ground_truth" / "Sc_app_0002.png")) > 127, mask.numpy())
    assert [p.split("/")[-1] for p, _ in kept.items()] == [f"{n}.png" for n in reversed(names)]
    # a second session with the same checkpoint goes on numbering; another checkpoint is refused
    assert KeptPairs(root, settings).next_name("Pa") == "Pa_app_0004"
    with pytest.raises(UserError, match="other settings"):
        KeptPairs(root, {"checkpoint_sha256": "b" * 64, "sampler": "per image"})
    with FolderLock(root), pytest.raises(UserError, match="being written by another run"):
        kept.add("In", torch.rand(3, 8, 8), mask, {})  # e.g. infer.py writing into the same folder
    with zipfile.ZipFile(kept.zip()) as zf:
        listed = set(zf.namelist())
    assert "kept/generation.json" in listed and "kept/Ground_truth/In_app_0003.png" in listed
    assert len(listed) == 1 + 2 * len(names)


def test_a_keep_stopped_by_a_full_disk_leaves_a_folder_the_page_can_reopen(tmp_path, monkeypatch):
    """The first keep's record is flushed before its pair: a full disk after the pair (at the record) leaves a
    pair without a record, whose name the next keep reuses, not a folder refused as holding foreign images."""
    import errno
    import os

    import inference.writer as writer

    root, mask = tmp_path / "kept", torch.zeros(8, 8, dtype=torch.bool)
    kept = KeptPairs(root, {"seed": 0})
    real, calls = writer.write_json_atomic, []

    def fills_up(obj, path):
        calls.append(path)
        if len(calls) > 1:  # the settings record went through, the record of the pair does not
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return real(obj, path)
    monkeypatch.setattr(writer, "write_json_atomic", fills_up)
    with pytest.raises(UserError, match="No space left on device"):
        kept.add("In", torch.rand(3, 8, 8), mask, {"seed": 1})
    assert (root / "Source_Images" / "In_app_0001.png").is_file()
    monkeypatch.setattr(writer, "write_json_atomic", real)
    again = KeptPairs(root, {"seed": 0})  # the page started again on the same --out
    assert again.add("In", torch.rand(3, 8, 8), mask, {"seed": 2}) == "In_app_0001"
    assert json.loads((root / "generation.json").read_text())["images"] == {"In_app_0001": {"seed": 2}}
    foreign = tmp_path / "foreign"
    (foreign / "Source_Images").mkdir(parents=True)
    (foreign / "Source_Images" / "x.png").write_bytes(b"")
    with pytest.raises(UserError, match="images without a generation.json; move them away or start the app"):
        KeptPairs(foreign, {"seed": 0})


def test_cli_checkpoint_and_host_checks(tmp_path, capsys):
    with pytest.raises(UserError, match="main.py --name demo --yaml_file configs/demo.yaml"):
        app.resolve_ckpt(None, demo=tmp_path / "none.safetensors")
    demo = tmp_path / "latest.safetensors"
    demo.write_bytes(b"x")
    assert app.resolve_ckpt(None, demo=demo) == demo
    assert "demo checkpoint" in capsys.readouterr().out
    with pytest.raises(UserError, match="--ckpt"):
        app.resolve_ckpt(tmp_path / "missing.safetensors")
    with pytest.raises(UserError, match="not an IP address"):
        app.check_host("example.org")
    app.check_host("127.0.0.1")
    app.check_host("0.0.0.0")
    assert "other computers" in capsys.readouterr().out
    assert app.parse_args([]).host == "127.0.0.1"


def test_cli_without_checkpoint_exits_2_with_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exc:
        app.run_cli(lambda: app.main([]))
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: no --ckpt given")


def test_guarded_turns_failures_into_page_messages():
    def bad_input():
        raise UserError("the mask is empty")

    def bug():
        raise RuntimeError("boom")

    with pytest.raises(gr.Error, match="the mask is empty"):
        guarded(bad_input)()
    with pytest.raises(gr.Error, match="internal error .RuntimeError: boom"):
        guarded(bug)()
    # handlers that write into the canvas leave it as it was and show the message in a note beside it,
    # which a successful request clears
    assert guarded(bad_input, keep_outputs=2)() == (gr.skip(), gr.skip(), "**error:** the mask is empty")
    assert guarded(lambda: ("value", "origin"), keep_outputs=2)() == ("value", "origin", "")
    assert guarded(lambda: "value", keep_outputs=1)() == ("value", "")
