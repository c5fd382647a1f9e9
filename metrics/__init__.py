"""Metrics below the packages that report them: FID/KID between image folders (:mod:`metrics.fid`, used by the
evaluation commands and by the mask producer's report; ``python -m evaluation.fid`` is its command) and the
saliency-detection scores (:mod:`metrics.sod`, used by the detector's validation and the evaluation tables)."""
