"""The fidelity stage: how close the generated pairs are to real ones."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from runtime.errors import UserError

from ..context import Ctx
from .base import Stage


class FidelityStage(Stage):
    """How close generated pairs are to real ones: detector IoU, mask adherence, FID/KID."""

    kind = "fidelity"

    def folder(self, ctx: Ctx) -> Path:
        return ctx.study_dir(self.study) / "fidelity"

    def inputs(self, ctx: Ctx) -> dict[str, Any]:
        from metrics.fid import find_inception_weights

        fid = dict(ctx.cfg["fidelity"])
        try:
            weights = find_inception_weights(fid["inception"]) if fid["fid"] else None
        except UserError:
            weights = None
        return {**fid, "inception_found": str(weights) if weights else None, "device": ctx.cfg["device"]}

    def clear(self, ctx: Ctx) -> list[Path]:
        return [self.folder(ctx)]

    def run(self, ctx: Ctx) -> dict[str, Any]:
        from ..fidelity import measure

        result = measure(ctx, self.study, self.folder(ctx))
        return {"fidelity": str(self.folder(ctx) / "fidelity.json"), "fid": result["fid"].get("skipped", "computed"),
                "paths": [str(self.folder(ctx) / "fidelity.json")]}
