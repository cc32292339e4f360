"""Sharding input lists across the processes of a ``torchrun`` launch.

torchrun sets ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` (and ``LOCAL_WORLD_SIZE``). Every
process lists the same inputs in the same order, so each can compute its own share without
talking to the others: no process group is needed.
"""

from __future__ import annotations

import heapq
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from lincae_cli.errors import LincaeError

_MIN_COST = 1e-3


@dataclass(frozen=True)
class ShardInfo:
    """This process's place in a launch (rank 0 of 1 outside torchrun).

    ``attempt`` names this launch the same way in every process: torchrun's run id (random with
    ``--standalone``, ``--rdzv-id`` otherwise, ``none`` by default) and its restart count; None
    when the variables were not set by torchrun.
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1
    attempt: str | None = None

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
    attempt = None
    if "TORCHELASTIC_RUN_ID" in env:
        attempt = f"{env['TORCHELASTIC_RUN_ID']}.{env.get('TORCHELASTIC_RESTART_COUNT', '0')}"
    return ShardInfo(rank, world_size, local_rank, local_world_size, attempt)


def assign_shares(costs: Sequence[float], world_size: int) -> list[int]:
    """The rank that takes each item, balancing the sum of ``costs`` (seconds of audio) per
    rank: longest item first to the least loaded rank (LPT), ties broken by rank and by the
    item's place in the list, so every process given the same list computes the same answer.

    The most loaded rank ends with at most ``mean + (1 - 1/world_size) * max(costs)``: within
    10 % of the mean once no item is longer than a tenth of a rank's share (docs/scale.md).
    """
    if world_size < 1:
        raise ValueError(f"world_size must be at least 1, got {world_size}")
    costs = [float(c) if math.isfinite(c) and c > 0 else 0.0 for c in costs]
    heap = [(0.0, rank) for rank in range(world_size)]  # (load, rank): least loaded first
    owners = [0] * len(costs)
    for index in sorted(range(len(costs)), key=lambda i: (-costs[i], i)):
        load, rank = heap[0]
        owners[index] = rank
        # A floor spreads items of unknown (zero) cost instead of piling them on one rank.
        heapq.heapreplace(heap, (load + max(costs[index], _MIN_COST), rank))
    return owners
