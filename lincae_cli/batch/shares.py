"""This process's tasks in a batch: inputs expanded and paired with outputs, work finished by an
earlier attempt set aside, the rest dealt to torchrun's ranks balanced by seconds of audio, and
each of this rank's outputs triaged (run, skip, refuse).

Every rank computes the same assignment without talking to the others: the inputs are listed
in a fixed order, costs come from file headers, and work counts as finished only when an earlier
attempt's manifest says so (those files do not change while this attempt runs; see
docs/scale.md), never from outputs that other ranks may be writing right now.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Collection, Sequence
from pathlib import Path

from lincae_cli.atomic import partial_files
from lincae_cli.batch.durations import input_seconds
from lincae_cli.batch.inputs import Failure, expand_inputs
from lincae_cli.batch.plan import Task, plan_outputs, triage
from lincae_cli.batch.result import BatchResult
from lincae_cli.batch.run_manifest import RunManifest
from lincae_cli.engine.shard import ShardInfo, assign_shares, shard_info
from lincae_cli.errors import LincaeError
from lincae_cli.paths import NULL_NAME


def plan_shares(
    args: Sequence[str | os.PathLike[str]],
    output: str | None,
    suffixes: Collection[str],
    kind: str,
    output_suffix: str,
    is_output_file: Callable[[str], bool],
    result: BatchResult,
    *,
    force: bool,
    skip_existing: bool,
    manifest: bool = False,
    null_output: bool = False,
) -> tuple[list[Task], ShardInfo, RunManifest | None]:
    """This rank's runnable tasks, its place in the launch and, with ``manifest``, the
    manifest it reports to. Every input dropped on the way is recorded in ``result``.

    ``null_output`` (``-n``): every task's output is `NULL_NAME` and nothing on disk is looked
    at or touched (no output planned, triaged or cleaned up)."""
    shard = shard_info()
    files, failures = expand_inputs([os.fspath(arg) for arg in args], suffixes, kind)
    result.fail_all(failures)
    if null_output:
        if output is not None or manifest:
            raise ValueError("a null output has no output path and no manifest")
        tasks = [Task(item, NULL_NAME) for item in files]
    else:
        tasks, failures = plan_outputs(files, output, output_suffix, is_output_file)
        result.fail_all(failures)
    if shard.is_distributed:
        result.info.update(rank=shard.rank, world_size=shard.world_size)
    if null_output:
        return _deal(tasks, shard, result, None, resume=False), shard, None
    run_manifest = None
    if manifest:
        run_manifest = RunManifest(_manifest_folder(output, tasks), shard, tasks, result)
    try:
        mine = _deal(tasks, shard, result, run_manifest, resume=skip_existing)
        _remove_stale_partials(mine)
        return _runnable(mine, force, skip_existing, result, run_manifest), shard, run_manifest
    except BaseException:
        if run_manifest is not None:
            run_manifest.close()
        raise


def _deal(
    tasks: list[Task],
    shard: ShardInfo,
    result: BatchResult,
    run_manifest: RunManifest | None,
    resume: bool,
) -> list[Task]:
    """This rank's share of the tasks; when resuming, only of those that earlier attempts did
    not finish (as the manifest says), the finished ones recorded as skipped, each by one rank.
    The share is recorded in the manifest."""
    done_before = set()
    if run_manifest is not None and resume:
        done_before = run_manifest.done_before(tasks)
    remaining = [task for task in tasks if task.output not in done_before]
    owners = _owners(remaining, shard)
    mine = [task for task, owner in zip(remaining, owners, strict=True) if owner == shard.rank]
    finished = [task for task in tasks if task.output in done_before]
    for task in finished[shard.rank :: shard.world_size]:
        result.skipped(task.input.name, task.output)
    if run_manifest is not None:
        run_manifest.record_plan(mine, shard, _plan_sha256(remaining, owners, finished))
    return mine


def _manifest_folder(output: str | None, tasks: list[Task]) -> Path:
    """The catalogue folder: ``-o`` when it names a folder (outputs mirrored inside it)."""
    if output is None or not all(task.create_parents for task in tasks):
        raise LincaeError(f"--manifest needs -o FOLDER (got {output or 'no -o'})")
    return Path(output)


def _owners(tasks: list[Task], shard: ShardInfo) -> list[int]:
    """The rank of each task: balanced by seconds of audio (headers are read only when there
    is more than one rank)."""
    if not shard.is_distributed:
        return [0] * len(tasks)
    return assign_shares(input_seconds([task.input for task in tasks]), shard.world_size)


def _plan_sha256(remaining: list[Task], owners: list[int], finished: list[Task]) -> str:
    """A digest of the whole assignment: equal on every rank that saw the same inputs."""
    document = [[task.output, owner] for task, owner in zip(remaining, owners, strict=True)]
    document.append(sorted(task.output for task in finished))
    return hashlib.sha256(json.dumps(document).encode()).hexdigest()


def _remove_stale_partials(tasks: list[Task]) -> None:
    """Remove what a killed writer left beside this rank's outputs: in this launch only this
    rank writes them. Each folder is listed once."""
    targets = {Path(task.output) for task in tasks if not task.to_stdout}
    for folder in sorted({target.parent for target in targets}):
        for target, partials in partial_files(folder).items():
            if target in targets:
                for partial in partials:
                    partial.unlink(missing_ok=True)


def _runnable(
    tasks: list[Task],
    force: bool,
    skip_existing: bool,
    result: BatchResult,
    run_manifest: RunManifest | None,
) -> list[Task]:
    runnable = []
    for task in tasks:
        verdict = triage(task, force, skip_existing)
        if verdict is None:
            runnable.append(task)
        elif isinstance(verdict, Failure):
            result.failed(verdict.name, verdict.message)
        elif run_manifest is not None and not run_manifest.knows(task):
            # Done by a run that stopped before reporting it (or ran without --manifest).
            run_manifest.adopt(task, result)
        else:
            result.skipped(task.input.name, task.output)
    return runnable
