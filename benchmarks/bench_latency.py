"""Latency of one generation through the page vs the same call ``infer.py`` makes, same process and model.

    python -m benchmarks.bench_latency --ckpt OUTPUT/demo/checkpoints/latest.safetensors \\
        --mask OUTPUT/demo/procedural/Ground_truth/Sc_1.png --steps 50 --repeats 5

Page: from the click on Generate in headless Chromium until the image is shown (queue, canvas decode,
outline, PNG encoding and transfer included). Library: ``generate_batch`` on the same mask, seed and
settings (what ``infer.py`` runs per batch). The two alternate so load on the machine hits both alike;
medians are printed, and also the page's time over the ``generate_batch`` call inside the same request
(the page's own cost, least disturbed by other work on the machine).
"""
from __future__ import annotations

import argparse
import re
import statistics
import time
from pathlib import Path
from typing import Optional

from runtime.errors import run_cli


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt", type=Path, required=True, help="DefFiller checkpoint (e.g. the CPU demo's)")
    p.add_argument("--mask", type=Path, required=True, help="a mask PNG whose name starts with a category prefix")
    p.add_argument("--steps", type=int, default=50, help="sampler steps (default 50)")
    p.add_argument("--sampler", default="plms", help="sampler (default plms)")
    p.add_argument("--repeats", type=int, default=5, help="timed rounds after one warm-up round (default 5)")
    args = p.parse_args(argv)

    from tools.browser import served_page
    from webapp.canvas import mask_from_upload

    page_s, lib_s, added = [], [], []
    with served_page(args.ckpt, 1400, 1000) as (demo, pg):
        engine = demo.deffiller_page.engine
        mask = mask_from_upload(args.mask, engine.size)
        cat = engine.category(args.mask.name.split("_")[0])
        opts = engine.options(args.sampler, args.steps, 3.0)
        with pg.expect_file_chooser() as chooser:
            pg.click("#upload_mask")
        chooser.value.set_files(str(args.mask))
        pg.get_by_label(cat.name).check()
        for field, value in (("#steps", args.steps), ("#variants", 1)):
            pg.locator(f"{field} input[type=number]").fill(str(value))
            pg.locator(f"{field} input[type=number]").press("Enter")
        pg.locator("#sampler input").fill(args.sampler)
        pg.locator("#sampler input").press("Enter")
        for k in range(args.repeats + 1):  # the first round warms up both paths
            pg.locator("#seed input").fill(str(k))
            pg.locator("#seed input").press("Enter")
            start = time.perf_counter()
            pg.click("#generate")
            pg.wait_for_function(f"document.querySelector('#results').innerText.includes('seed {k}') && "
                                 "[...document.querySelectorAll('#results img')].every(i => i.complete && "
                                 "i.naturalWidth > 0)", polling="raf")
            elapsed = time.perf_counter() - start
            inside = float(re.search(r"in ([0-9.]+) s", pg.locator("#timing").inner_text()).group(1))
            start = time.perf_counter()
            engine.generate(mask, cat, [k], opts)
            library = time.perf_counter() - start
            if k:
                page_s.append(elapsed)
                lib_s.append(library)
                added.append(elapsed / inside - 1)
            print(f"round {k}: page {elapsed:.3f} s (its generate_batch call {inside:.3f} s), "
                  f"library {library:.3f} s")
    page_m, lib_m = statistics.median(page_s), statistics.median(lib_s)
    print(f"median of {args.repeats}: page {page_m:.3f} s, library (infer.py's call) {lib_m:.3f} s "
          f"({100 * (page_m / lib_m - 1):+.1f} %); within the same request the page adds "
          f"{100 * statistics.median(added):+.1f} % to its generate_batch call")
    return 0


if __name__ == "__main__":
    run_cli(main)
