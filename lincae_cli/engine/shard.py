"""Sharding input lists across the processes of a ``torchrun`` launch.

torchrun sets ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` (and ``LOCAL_WORLD_SIZE``). Every
process lists the same inputs in the same order, so each can compute its own share without
talking to the others: no process group is needed.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

from lincae_cli.errors import LincaeError

T = TypeVar("T")


@dataclass(frozen=True)
class ShardInfo:
    """This process's place in a launch (rank 0 of 1 outside torchrun)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1


def shard_info(environ: Mapping[str, str] | None = None) -> ShardInfo:
    """Read torchrun's variables; a partial or inconsistent set is a `LincaeError`."""
    env = os.environ if environ is None else environ
    if "RANK" not in env and "WORLD_SIZE" not in env:
        return ShardInfo()
    try:
        rank = int(env["RANK"])
        world_size = int(env["WORLD_SIZE"])
        local_rank = int(env.get("LOCAL_RANK", rank))
        local_world_size = int(env.get("LOCAL_WORLD_SIZE", world_size))
    except (KeyError, ValueError):
        raise LincaeError(
            "RANK and WORLD_SIZE must both be set to integers (as torchrun does) or both unset"
        ) from None
    if not (world_size >= 1 and 0 <= rank < world_size and 0 <= local_rank < local_world_size):
        raise LincaeError(
            f"inconsistent torchrun environment: RANK={rank} WORLD_SIZE={world_size} "
            f"LOCAL_RANK={local_rank} LOCAL_WORLD_SIZE={local_world_size}"
        )
    return ShardInfo(rank, world_size, local_rank, local_world_size)


def shard_items(items: Sequence[T], costs: Sequence[float], info: ShardInfo) -> list[T]:
    """This rank's share of ``items``, balanced by ``costs`` (e.g. file sizes).

    Greedy longest-first assignment to the least loaded rank, ties broken by rank and input
    order, so every process computes the same split. The share keeps the input order.
    """
    if len(items) != len(costs):
        raise ValueError(f"{len(items)} items but {len(costs)} costs")
    if info.world_size == 1:
        return list(items)
    loads = [0.0] * info.world_size
    owner = [0] * len(items)
    for index in sorted(range(len(items)), key=lambda i: (-costs[i], i)):
        rank = min(range(info.world_size), key=lambda r: (loads[r], r))
        owner[index] = rank
        loads[rank] += max(float(costs[index]), 1.0)
    return [item for index, item in enumerate(items) if owner[index] == info.rank]
