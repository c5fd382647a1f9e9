"""DefFiller evaluation: generation quality (FID/KID), saliency-detection metrics, a compact
saliency detector, the paper's data-substitution / data-expansion protocols and the sample filter.

Every command is a module: ``python -m evaluation.<command> --help``.
"""
