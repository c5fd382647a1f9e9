"""Mask producer for data expansion (DefFiller paper §4.4.1).

A small class-conditional DDPM trained from scratch on ground-truth defect masks at 64×64 draws new
masks per category; they are binarised, cleaned, resized to 256×256 and then condition DefFiller.

* ``python -m maskgen.train``  — train / resume (``maskgen.train``)
* ``python -m maskgen.sample`` — N masks per category as ``<prefix>_gen_0001.png`` (``maskgen.sample``)
* ``python -m maskgen.report`` — real-vs-generated statistics, KS, grid, mask FID (``maskgen.report``)

The noise schedule and samplers are the project's (``ldm.diffusion``); categories and mask I/O come
from ``dataset``.
"""
