"""The report stage: the studies' tables, pictures and targets in one report."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ..context import Ctx
from .base import Stage


class ReportStage(Stage):
    kind = "report"

    def folder(self, ctx: Ctx) -> Path:
        return ctx.out / "report"

    def inputs(self, ctx: Ctx) -> dict[str, Any]:
        from runtime.digest import file_sha256_or_none

        from ..report import paper_tables_path

        path = paper_tables_path()
        return {"paper_tables": [str(path), file_sha256_or_none(path)],
                "targets": ctx.cfg["targets"], "report": ctx.cfg["report"], "profile": ctx.cfg.get("profile"),
                "name": ctx.cfg["name"]}

    def clear(self, ctx: Ctx) -> list[Path]:
        return [self.folder(ctx)]

    def run(self, ctx: Ctx) -> dict[str, Any]:
        from ..report import write_report

        path = write_report(ctx, self.folder(ctx))
        return {"report": str(path), "paths": [str(path)]}
