"""The platform every DefFiller command runs on: one-line user errors and exit codes (``errors``), atomic
file writes (``atomic``), strict layered options (``options``) and the evaluation commands' OmegaConf configs
(``configs``), the shared flag vocabulary (``cli``), the device choice (``device``), seeded random streams
(``seeds``), the safe torch-file reader (``safe_load``), SHA-256 digests and file fingerprints (``digest``) and
the ``torchrun`` process group (``distributed``)."""
