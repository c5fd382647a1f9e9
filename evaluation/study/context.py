"""What every stage of the study sees (:class:`Ctx`), the stage kinds in order, and the time format
shared by the stages, the command line and the report."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from dataset.categories import categories_from_config
from dataset.pairs import Pair, find_pairs
from dataset.splits import load_split
from runtime.errors import UserError
from runtime.parallel import threads_per_job

from .stamps import StampStore

#: stage kinds in execution order within a study
KINDS = ("split", "pretrain", "generator", "maskgen", "baseline", "generation", "filter", "detectors", "fidelity",
         "report")


@dataclass
class Ctx:
    """What every stage sees: the config, the stamps, logging and the set of forced stages."""

    cfg: dict[str, Any]
    store: StampStore
    log: Callable[[str], None] = print
    progress: bool = True
    forced: set[str] = field(default_factory=set)
    _pairs_by_stem: Optional[dict[str, Pair]] = field(default=None, init=False, repr=False)
    _test_digests: dict[tuple, dict[str, str]] = field(default_factory=dict, init=False, repr=False)

    @property
    def out(self) -> Path:
        return Path(self.cfg["out"])

    @property
    def data_root(self) -> str:
        return str(self.cfg["data_root"])

    @property
    def categories(self):
        return categories_from_config(self.cfg.get("categories"))

    def study_config(self, study: str) -> dict[str, Any]:
        """The ``studies.<study>`` section of the config."""
        return self.cfg["studies"][study]

    def study_dir(self, study: str) -> Path:
        return self.out / study

    def outputs(self, key: str) -> dict[str, Any]:
        stamp = self.store.read(key)
        if stamp is None:
            raise UserError(f"stage {key} has not finished; run the study without --until (or up to {key}) first")
        return stamp["outputs"]

    def split(self, study: str) -> tuple[dict, Path]:
        path = Path(self.outputs(f"{study}.split")["split"])
        return load_split(path), path

    def pairs(self, study: str) -> tuple[list[Pair], list[Pair]]:
        """(training pairs, test pairs) of a study's split."""
        split, _ = self.split(study)
        by_stem = self.pairs_by_stem()
        return [by_stem[s] for s in split["train"]], [by_stem[s] for s in split["test"]]

    def pairs_by_stem(self) -> dict[str, Pair]:
        """The data root's pairs by stem, scanned once per context (the dataset does not change during a run)."""
        if self._pairs_by_stem is None:
            self._pairs_by_stem = {p.stem: p for p in find_pairs(self.data_root, self.categories, check_sizes=False)}
        return self._pairs_by_stem

    def test_stems(self, study: str) -> set[str]:
        return set(self.split(study)[0]["test"])

    def test_digests(self, study: str) -> dict[str, str]:
        """Pixel digests of the study's test images and masks (:func:`.leakage.test_digests`), once per split."""
        from runtime.digest import file_sha256_or_none

        from .leakage import test_digests

        split, path = self.split(study)
        key = (study, str(path), file_sha256_or_none(path))
        if key not in self._test_digests:
            by_stem = self.pairs_by_stem()
            self._test_digests[key] = test_digests([by_stem[s] for s in split["test"]])
        return self._test_digests[key]

    def device_overrides(self) -> list[str]:
        """Detector config overrides for the study's device and threads (per run, for ``jobs`` runs at a time)."""
        out = [f"train.device={self.cfg['device']}"]
        threads = int(self.cfg.get("threads") or 0)
        jobs = int(self.cfg.get("jobs") or 1)
        if threads > 0 or jobs > 1:  # runs side by side share the cores out
            out.append(f"train.num_threads={threads_per_job(threads, jobs)}")
        return out


def seconds_text(seconds: float) -> str:
    seconds = float(seconds)
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, sec = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{sec:02d}s" if hours else f"{minutes}m{sec:02d}s"
