"""Planning and running the stages: which are up to date, which rebuild and why, and the run loop.

A stage is up to date when its stamp's input hash equals the hash of its current inputs (config subset,
files it reads, digests of its upstream stamps) and its outputs exist; otherwise it runs, and every stage
that depends on it follows when its outputs changed (the new stamp has a new digest; ``--force`` always
gives one). A stage that fails or is
interrupted leaves no stamp: the next run starts there again, and the command inside resumes where it
can (main.py, maskgen.train, detector training, generation). Before a stage reruns with inputs that
differ from its last attempt, its derived outputs are cleared; training runs are kept (their commands
refuse incompatible changes themselves) and moved aside only with ``--force``.
"""
from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

from runtime.errors import UserError

from .context import KINDS, Ctx, seconds_text
from .stages import Stage, StageStopped, remove_path
from .stamps import hash_matches, input_hash


@dataclass
class Status:
    key: str
    up_to_date: bool
    reason: str
    note: str = ""


def _inputs(stage: Stage, ctx: Ctx) -> dict[str, Any]:
    deps = {}
    for dep in stage.deps:
        stamp = ctx.store.read(dep)
        deps[dep] = stamp["digest"] if stamp else None
    return {"inputs": stage.inputs(ctx), "deps": deps}


def _changed(old: dict[str, Any], new: dict[str, Any]) -> str:
    """A short description of what differs between two input records."""
    dep_changes = [k for k in new.get("deps", {}) if old.get("deps", {}).get(k) != new["deps"][k]]
    if dep_changes:
        return f"upstream {', '.join(dep_changes)} rebuilt"
    o, n = old.get("inputs", {}), new.get("inputs", {})
    keys = [k for k in sorted(set(o) | set(n)) if o.get(k) != n.get(k)]
    return f"inputs changed ({', '.join(keys)})" if keys else "inputs changed"


def stage_status(stage: Stage, ctx: Ctx, pending: set[str], forced: set[str]) -> Status:
    """Up to date or not, and why; ``pending``: upstream stages that will rebuild first."""
    stamp = ctx.store.read(stage.key)
    if stage.key in forced:
        return Status(stage.key, False, "forced (--force)")
    waiting = [d for d in stage.deps if d in pending]
    if waiting:
        return Status(stage.key, False, f"after {', '.join(waiting)}")
    if stamp is None:
        started = ctx.store.started_hash(stage.key) is not None
        return Status(stage.key, False, "interrupted; resumes" if started else "not run yet")
    try:
        current = _inputs(stage, ctx)
    except UserError as exc:
        return Status(stage.key, False, f"inputs unreadable ({exc})")
    if not hash_matches(stamp["hash"], current):
        return Status(stage.key, False, _changed(stamp.get("inputs", {}), current))
    missing = [p for p in stamp["outputs"].get("paths", []) if not Path(p).exists()]
    if missing:
        return Status(stage.key, False, f"output missing ({missing[0]})")
    return Status(stage.key, True, f"up to date (finished {stamp['finished']}, {seconds_text(stamp['seconds'])})")


def plan(stages: Sequence[Stage], ctx: Ctx, forced: set[str]) -> list[Status]:
    """Every stage's status, in order, as a run would find them."""
    pending: set[str] = set()
    out = []
    for stage in stages:
        status = stage_status(stage, ctx, pending, forced)
        if not status.up_to_date:
            pending.add(stage.key)
            try:
                status.note = stage.note(ctx)
            except (OSError, ValueError):
                status.note = ""
        out.append(status)
    return out


def format_plan(statuses: Sequence[Status]) -> str:
    width = max(len(s.key) for s in statuses)
    lines = []
    for s in statuses:
        mark = "ok " if s.up_to_date else "RUN"
        lines.append(f"  {mark} {s.key:<{width}}  {s.reason}" + (f" [{s.note}]" if s.note else ""))
    return "\n".join(lines)


def resolve_names(names: Sequence[str], stages: Sequence[Stage], flag: str) -> list[str]:
    """Stage keys for ``names``: a full key (``expansion.filter``) or a kind (``detectors``: every study's)."""
    keys = [s.key for s in stages]
    out: list[str] = []
    for name in names:
        if name in keys:
            out.append(name)
            continue
        matched = [s.key for s in stages if s.kind == name]
        if not matched:
            valid = ", ".join(keys + [k for k in KINDS if any(s.kind == k for s in stages)])
            raise UserError(f"{flag} {name}: no such stage in this study config; valid: {valid}")
        out.extend(matched)
    return out


def select_until(stages: Sequence[Stage], until: Optional[str]) -> list[Stage]:
    """The stages ``--until`` keeps: up to a full key in execution order, or every stage up to a kind."""
    if not until:
        return list(stages)
    keys = [s.key for s in stages]
    if until in keys:
        return list(stages[:keys.index(until) + 1])
    resolve_names([until], stages, "--until")
    limit = KINDS.index(until)
    return [s for s in stages if KINDS.index(s.kind) <= limit]


def _move_aside(path: Path, log) -> None:
    if not path.exists():
        return
    target = path.with_name(f"{path.name}.old-{time.strftime('%Y%m%d-%H%M%S')}")
    shutil.move(str(path), str(target))
    log(f"moved {path} aside to {target} (--force)")


def _prepare(stage: Stage, ctx: Ctx, pending_force: set[str]) -> None:
    """Before a stage runs: move aside / clear what its new inputs make stale, and mark it started."""
    started = _inputs(stage, ctx)
    previous = ctx.store.read(stage.key)
    if stage.key in pending_force:
        for path in stage.reset(ctx):
            _move_aside(path, ctx.log)
        for path in stage.clear(ctx):
            remove_path(path)
    elif ((previous is not None and not hash_matches(previous["hash"], started))
          or (ctx.store.started_hash(stage.key) is not None
              and not hash_matches(ctx.store.started_hash(stage.key), started))):
        for path in stage.clear(ctx):
            if path.exists():
                ctx.log(f"[{stage.key}] inputs changed: clearing {path}")
            remove_path(path)
    ctx.store.remove(stage.key)
    ctx.store.mark_started(stage.key, input_hash(started))


def _finish(stage: Stage, ctx: Ctx, outputs: dict[str, Any], seconds: float, pending_force: set[str],
            beside: Sequence[str] = ()) -> None:
    finished = _inputs(stage, ctx)  # e.g. a split file the stage has just made
    ctx.store.write(stage.key, input_hash(finished), finished, outputs, seconds, forced=stage.key in pending_force)
    ctx.store.record_time(stage.key, seconds, "finished", beside)
    pending_force.discard(stage.key)
    ctx.log(f"[{stage.key}] done in {seconds_text(seconds)}")


def _failure(exc: BaseException) -> str:
    return "interrupted" if isinstance(exc, (KeyboardInterrupt, StageStopped)) else "failed"


def run_stage_in_worker(stage: Stage, ctx: Ctx) -> dict[str, Any]:
    """``stage.run`` in a worker process of :func:`run_stages` (logging to its standard output)."""
    return stage.run(ctx)


def _side_by_side(stages: Sequence[Stage], i: int, ctx: Ctx, pending_force: set[str]) -> list[Stage]:
    """The training stages from ``stages[i]`` on that can train at the same time: each one not up to date and
    independent of the ones before it in the group (up-to-date stages in between are passed over)."""
    group = [stages[i]]
    for stage in stages[i + 1:]:
        keys = {g.key for g in group}
        if any(d in keys for d in stage.deps):
            break
        if stage_status(stage, ctx, keys, pending_force).up_to_date:
            continue
        if not stage.trains(ctx):
            break
        group.append(stage)
    return group


def _run_group(group: list[Stage], ctx: Ctx, pending_force: set[str], jobs: int) -> None:
    """Independent training stages side by side, each in a worker process with its share of the threads."""
    from dataclasses import replace

    from runtime.parallel import run_jobs, threads_per_job

    for stage in group:
        _prepare(stage, ctx, pending_force)
    share = threads_per_job(int(ctx.cfg.get("threads") or 0), min(jobs, len(group)))
    # each worker runs its own jobs one at a time (a stage of detector runs trains them in turn)
    worker_ctx = replace(ctx, cfg={**ctx.cfg, "threads": share, "jobs": 1}, log=print, progress=False)
    ctx.log(f"{', '.join(s.key for s in group)}: side by side in worker processes, {share} thread(s) each "
            "(their logs follow as they come)")
    t0 = time.perf_counter()
    done: set[str] = set()

    def others(stage: Stage) -> list[str]:
        return [s.key for s in group if s is not stage]

    def finished(k: int, outputs: dict[str, Any]) -> None:
        _finish(group[k], ctx, outputs, time.perf_counter() - t0, pending_force, others(group[k]))
        done.add(group[k].key)

    try:
        run_jobs(run_stage_in_worker, [(stage, worker_ctx) for stage in group], jobs, share, on_done=finished)
    except BaseException as exc:
        for stage in group:
            if stage.key not in done:
                ctx.store.record_time(stage.key, time.perf_counter() - t0, _failure(exc), others(stage))
        raise


def run_stages(stages: Sequence[Stage], ctx: Ctx, forced: set[str]) -> list[str]:
    """Run every stage that is not up to date, in order; returns the keys that ran. With ``jobs`` > 1 in the
    config, independent training stages (the expansion study's generator, mask producer and baseline
    detectors) train side by side."""
    ran: list[str] = []
    pending_force = set(forced)
    jobs = int(ctx.cfg.get("jobs") or 1)
    for i, stage in enumerate(stages):
        if stage.key in ran:  # trained in an earlier stage's group
            continue
        status = stage_status(stage, ctx, set(), pending_force)
        if status.up_to_date:
            ctx.log(f"[{stage.key}] {status.reason}")
            continue
        ctx.log(f"[{stage.key}] running: {status.reason}")
        group = _side_by_side(stages, i, ctx, pending_force) if jobs > 1 and stage.trains(ctx) else [stage]
        if len(group) > 1:
            for other in group[1:]:
                ctx.log(f"[{other.key}] running: {stage_status(other, ctx, set(), pending_force).reason}")
            _run_group(group, ctx, pending_force, jobs)
        else:
            _prepare(stage, ctx, pending_force)
            t0 = time.perf_counter()
            try:
                outputs = stage.run(ctx)
            except BaseException as exc:
                ctx.store.record_time(stage.key, time.perf_counter() - t0, _failure(exc))
                raise
            _finish(stage, ctx, outputs, time.perf_counter() - t0, pending_force)
        ran += [s.key for s in group]
    return ran
