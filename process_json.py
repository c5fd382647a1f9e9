"""Write caption.json for an SD-Saliency-900 style dataset folder (see ``python process_json.py --help``).

The command lives in :mod:`dataset.captions` (installed as ``deffiller-captions``).
"""
from dataset.captions import entry_point, main

__all__ = ["main"]

if __name__ == "__main__":
    entry_point()
