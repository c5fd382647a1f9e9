"""An offline CLIP tokenizer with the ids of ``openai/clip-vit-large-patch14``.

A locally cached hub tokenizer is used when one exists; otherwise the tokenizer is built from the
byte-level BPE vocabulary that ``open_clip_torch`` ships (``bpe_simple_vocab_16e6.txt.gz``, the same
file OpenAI's CLIP uses): we derive ``vocab.json``/``merges.txt`` once into a cache folder and load
them with transformers' ``CLIPTokenizer``.
"""
from __future__ import annotations

import functools
import gzip
import importlib.util
import json
import os
import tempfile
from pathlib import Path

from runtime.errors import UserError

NUM_MERGES = 49152 - 256 - 2  # CLIP keeps this many merges: 256 bytes x2 + merges + 2 specials = 49408
SPECIALS = ("<|startoftext|>", "<|endoftext|>")


def _bytes_to_unicode() -> dict[int, str]:
    """Reversible byte -> printable-unicode table of byte-level BPE."""
    printable = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
                 + list(range(ord("®"), ord("ÿ") + 1)))
    table = {b: chr(b) for b in printable}
    others = [b for b in range(256) if b not in table]
    table.update({b: chr(256 + i) for i, b in enumerate(others)})
    return table  # insertion order = CLIP's vocabulary order


def _bpe_file() -> Path:
    spec = importlib.util.find_spec("open_clip")  # the package's folder, without importing it (seconds)
    if spec is None or not spec.origin:  # pragma: no cover - open_clip_torch is a requirement
        raise UserError("open_clip_torch is not installed; run `pip install -r requirements.txt`")
    path = Path(spec.origin).parent / "bpe_simple_vocab_16e6.txt.gz"
    if not path.is_file():
        raise UserError(f"{path} is missing from open_clip_torch; reinstall it (`pip install -U open_clip_torch`)")
    return path


def vocab_and_merges(bpe_path: Path) -> tuple[dict[str, int], list[str]]:
    """Rebuild CLIP's vocabulary (49408 entries) and merge list from the BPE file."""
    lines = gzip.open(bpe_path).read().decode("utf-8").split("\n")
    merges = lines[1:NUM_MERGES + 1]
    base = list(_bytes_to_unicode().values())
    vocab = base + [b + "</w>" for b in base] + ["".join(m.split()) for m in merges] + list(SPECIALS)
    return {tok: i for i, tok in enumerate(vocab)}, merges


def _cache_dir() -> Path:
    root = os.environ.get("DEFFILLER_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "deffiller")
    return Path(root) / "clip_tokenizer"


def build_tokenizer_files(folder: Path) -> Path:
    """Write vocab.json, merges.txt and tokenizer_config.json into ``folder`` (atomically)."""
    if (folder / "tokenizer_config.json").is_file():
        return folder
    vocab, merges = vocab_and_merges(_bpe_file())
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=".tok-"))
    (tmp / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (tmp / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    (tmp / "tokenizer_config.json").write_text(json.dumps({
        "model_max_length": 77, "do_lower_case": True, "bos_token": SPECIALS[0], "eos_token": SPECIALS[1],
        "unk_token": SPECIALS[1], "pad_token": SPECIALS[1]}), encoding="utf-8")
    try:
        os.replace(tmp, folder)
    except OSError:  # another process won the race; its files are identical
        for f in tmp.iterdir():
            f.unlink()
        tmp.rmdir()
    return folder


@functools.lru_cache(maxsize=4)
def load_clip_tokenizer(version: str = "openai/clip-vit-large-patch14"):
    """CLIP tokenizer: local hub copy of ``version`` if cached, else built offline from open_clip's BPE."""
    from transformers import CLIPTokenizer

    try:
        tok = CLIPTokenizer.from_pretrained(version, local_files_only=True)
        if _looks_like_clip(tok):
            return tok
    except Exception:  # not cached locally (the usual case offline): build it
        pass
    tok = CLIPTokenizer.from_pretrained(str(build_tokenizer_files(_cache_dir())), local_files_only=True)
    if not _looks_like_clip(tok):
        raise UserError(f"the CLIP tokenizer built in {_cache_dir()} gives wrong ids; delete that folder and retry")
    return tok


# "a photo of a cat" with openai/clip-vit-large-patch14
_REFERENCE_IDS = [49406, 320, 1125, 539, 320, 2368, 49407]


def _looks_like_clip(tok) -> bool:
    """Some transformers releases return an empty tokenizer instead of failing when files are missing."""
    return len(tok) == 49408 and tok("a photo of a cat")["input_ids"] == _REFERENCE_IDS


def tokenize(prompts: list[str], version: str = "openai/clip-vit-large-patch14", max_length: int = 77):
    """Token ids (B x max_length, padded with the end token 49407) as a LongTensor."""
    tok = load_clip_tokenizer(version)
    out = tok(list(prompts), truncation=True, max_length=max_length, padding="max_length", return_tensors="pt")
    return out["input_ids"]
