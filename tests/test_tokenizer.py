"""The offline CLIP tokenizer gives openai/clip-vit-large-patch14's ids."""
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

SCRIPT = """
import sys; sys.path.insert(0, {repo!r})
from ldm.modules.tokenizer import tokenize
ids = tokenize(["a photo of a cat", "scratches", ""])
print(ids.shape[1], *ids[0, :9].tolist())
print(*ids[1, :4].tolist())
print(*ids[2, :3].tolist())
"""


def test_tokenizer_ids_offline(tmp_path):
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_HOME=str(tmp_path / "hf"),
               DEFFILLER_CACHE=str(tmp_path / "cache"))  # nothing cached: must build from open_clip's BPE
    out = subprocess.run([sys.executable, "-c", SCRIPT.format(repo=str(REPO))], env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].split() == "77 49406 320 1125 539 320 2368 49407 49407 49407".split()
    assert lines[1].split()[0] == "49406" and lines[1].split()[-2:] == ["49407", "49407"]
    assert lines[2].split() == ["49406", "49407", "49407"]
    assert (tmp_path / "cache" / "clip_tokenizer" / "vocab.json").is_file()
