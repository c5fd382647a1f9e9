"""Realism card: do generated defect images look like the real ones? No downloaded weights needed.

    python -m evaluation.realism --real DIR --generated DIR [--train DIR] [--out DIR] [--size 64] [--seed 0]
    python -m evaluation.realism --real DATA/SD-saliency-900 --real_split DATA/splits/S.json --generated G

``--real`` holds real image/mask pairs (``Source_Images/`` or ``Source Images/`` and ``Ground_truth/`` or
``Ground truth/``), usually the held-out pairs whose masks the generated images were made from;
``--generated`` the pairs written by ``infer.py`` (stems ``In_12`` or ``In_12_s0``); ``--train`` (optional)
the real training images, for the memorisation check. With ``--real_split`` only the split's
``--real_part`` (default test) of ``--real`` is the real set and, without ``--train``, its training part
is the training set. Categories come from the stem prefix (``In``/``Pa``/``Sc``); every generated
category must have real images.

Per category and overall:

1. brightness: each image's mean grey level in [0, 1]; mean ± sd per set, the two-sample KS statistic
   and the spread ratio sd_generated / sd_real (targets: KS <= 0.2, spread ratio >= 0.8);
2. in-image contrast: each image's pixel standard deviation; means and their ratio;
3. mask adherence: mean CNR of :func:`evaluation.mask_adherence.defect_contrast`, generated / real
   (target >= 0.9);
4. Fréchet Wavelet Distance (pytorchfwd's definition): FWD(real, generated), the real-vs-real floor
   FWD(A, B) of seeded random real halves and, at the floor's set sizes, FWD(A, generated images of B's
   masks) (target: <= 2 x floor); see :mod:`evaluation.realism.fwd`;
5. memorisation (with ``--train``): distance of each generated and each real image to its nearest
   training image (1 - correlation at 64 px); median, 5th percentile and the fraction of generated
   images nearer than the real 5th percentile, flagged "possible memorisation" above 10 %. A real image
   pixel-identical to a training image is reported as a split leak.
6. what a real sample scores (with training images; ``--ref_draws``, default 200): seeded sets of
   training images, as many per category as there are generated ones, scored against the real set as
   the generated set is; per brightness and CNR target the median value and how often such a set meets
   it, and how many of those targets a real sample meets on average (``evaluation.realism.reference``);
   and, with ``--ref_fwd_draws`` (default 30) training sets in place of the generated images, the same-size
   FWD/floor a real sample scores and how often it is within 2 x the floor. Each target row carries that
   rate, and the card counts the targets met of those a real sample meets in at least half its draws.

Brightness, contrast and FWD use the images resized to ``--size`` (default: the real images' side);
CNR uses the native images. Writes ``realism.md``, ``realism.csv`` (category, metric, real,
generated, value), ``realism.json`` and ``realism.png`` (brightness histograms and 4 real + 4
generated tiles per category) to ``--out`` (default ``<generated>/realism``), all atomically and only
once every number is computed.
"""
from .build import Inputs, build_card, stacks, targets
from .card import csv_rows, markdown, picture, write_card
from .cli import build_parser, load_inputs, main
from .data import OVERALL, ImageSet, list_set, read_set
from .fwd import auto_level, fwd_sets, fwd_table, packet_stats
from .metrics import brightness_summary, cnr_summary, contrast_summary, memo_summary, nearest

__all__ = ["Inputs", "ImageSet", "OVERALL", "auto_level", "brightness_summary", "build_card",
           "build_parser", "cnr_summary", "contrast_summary", "csv_rows", "fwd_sets", "fwd_table", "list_set",
           "load_inputs", "main", "markdown", "memo_summary", "nearest", "packet_stats", "picture", "read_set",
           "stacks", "targets", "write_card"]
