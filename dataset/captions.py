"""Write caption.json for an SD-Saliency-900 style dataset folder.

Each image in ``<data_root>/Source Images`` (or ``Source_Images``) gets the caption of its defect
category, chosen by filename prefix (``In_3.bmp`` -> "A photo of inclusion"). The output is a JSON
object ``{"In_1.bmp": "A photo of inclusion", ...}`` that ``dataset.find_pairs`` reads back.

Example::

    python process_json.py --data_root DATA/SD-saliency-900
    python process_json.py --data_root my_data --yaml_file configs/my.yaml --template "{prompt}"
"""
from __future__ import annotations

import argparse
import string
import sys
from pathlib import Path
from typing import Sequence

from dataset.categories import (
    Category,
    categories_from_config,
    category_for_file,
    category_from_prefix,
    load_categories_yaml,
)
from dataset.io import write_json_atomic
from dataset.pairs import CAPTION_FILE, list_images
from runtime.errors import UserError, run_cli

DEFAULT_TEMPLATE = "A photo of {prompt}"
_FIELDS = {"prompt", "name", "prefix"}


def _check_template(template: str) -> None:
    try:
        fields = {f for _, f, _, _ in string.Formatter().parse(template) if f is not None}
    except ValueError as exc:
        raise UserError(f"--template {template!r}: {exc}; use {{prompt}} for the category "
                        "prompt and {{ and }} for literal braces") from None
    unknown = fields - _FIELDS
    if unknown:
        raise UserError(f"--template {template!r}: unknown field(s) "
                        f"{', '.join('{' + f + '}' for f in sorted(unknown))}; "
                        "allowed: {prompt}, {name}, {prefix}")
    if not fields & {"prompt", "name"}:
        raise UserError(f"--template {template!r} must contain {{prompt}} or {{name}} so the "
                        "caption identifies the category")


def make_captions(images: Sequence[Path], categories: Sequence[Category],
                  template: str = DEFAULT_TEMPLATE) -> dict[str, str]:
    """Caption per image filename; verified to map back to the same category."""
    _check_template(template)
    captions = {}
    for path in images:
        cat = category_from_prefix(path.name, categories)
        captions[path.name] = template.format(prompt=cat.prompt, name=cat.name, prefix=cat.prefix)
    for path in images:
        expected = category_from_prefix(path.name, categories)
        if category_for_file(path.name, categories, captions) != expected:
            raise UserError(f"--template {template!r}: the caption {captions[path.name]!r} of "
                            f"{path.name} reads back as another category; reword the template")
    return captions


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Write caption.json (image filename -> caption) for a defect dataset folder. "
                    "The category comes from the filename prefix before the first '_'.",
        epilog="example: python process_json.py --data_root DATA/SD-saliency-900 "
               "--template 'A photo of {prompt}'")
    parser.add_argument("--data_root", default="DATA/SD-saliency-900",
                        help="dataset folder holding 'Source Images' or 'Source_Images' "
                             "(default: %(default)s)")
    parser.add_argument("--config", "--yaml_file", dest="yaml_file", default=None,
                        help="YAML config with a 'categories:' list (top level or under 'data:') of "
                             "{name, prefix, index, prompt}; default: inclusion/In, patches/Pa, "
                             "scratches/Sc")
    parser.add_argument("--template", default=DEFAULT_TEMPLATE,
                        help="caption template with fields {prompt}, {name}, {prefix} "
                             "(default: %(default)r)")
    parser.add_argument("--out", "--output", dest="output", default=None,
                        help=f"output file (default: <data_root>/{CAPTION_FILE})")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing caption file")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    categories = None
    if args.yaml_file:
        categories = load_categories_yaml(args.yaml_file)
        if categories is None:
            print(f"note: {args.yaml_file} has no 'categories:' list; using the "
                  "default categories", file=sys.stderr)
    categories = categories_from_config(categories)
    root = Path(args.data_root)
    output = Path(args.output) if args.output else root / CAPTION_FILE
    if output.exists() and not args.overwrite:
        raise UserError(f"{output}: already exists; pass --overwrite to replace it")
    captions = make_captions(list_images(root), categories, args.template)
    write_json_atomic(captions, output)
    counts: dict[str, int] = {}
    for name in captions:
        cat = category_from_prefix(name, categories).name
        counts[cat] = counts.get(cat, 0) + 1
    summary = ", ".join(f"{n} {c}" for c, n in counts.items())
    print(f"wrote {output} with {len(captions)} captions ({summary})")
    return 0



def entry_point() -> None:
    """``python process_json.py`` / the ``deffiller-captions`` script: :func:`main` with one-line errors and
    exit codes."""
    run_cli(main)


if __name__ == "__main__":
    entry_point()
