r"""Process groups for meta-training: ``torch.distributed`` under ``torchrun``, or one process.

``torchrun --nproc_per_node=N -m lopt.meta_train ...`` sets ``WORLD_SIZE``, ``RANK``,
``LOCAL_RANK`` and the rendezvous variables; :func:`init_group` then joins the group with
the backend that fits the device (NCCL for CUDA, gloo for CPU). Without those variables (a
plain ``python -m lopt.meta_train``) it returns a single-process group whose collectives
are no-ops, so the training loop has one code path.

Failure handling: collectives block until every rank joins, so a rank that raised or met a
non-finite value would leave the others waiting. Ranks therefore never skip a collective:
they report failures through :meth:`Group.agree` (an all-reduce of per-rank flags), and every
rank raises :class:`GroupError` at the same point. The process-group timeout
(``--dist-timeout``) is the backstop for a rank that dies outright.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor

__all__ = ["Group", "GroupError", "init_group"]


class GroupError(RuntimeError):
    """A rank of the meta-training group failed; every rank raises it at the same step."""


@dataclass
class Group:
    """The meta-training process group (``world == 1``: no ``torch.distributed`` at all).

    Attributes:
        rank, world, local_rank: this process and the group size.
        device: the device this rank computes on.
        backend: ``"gloo"``, ``"nccl"`` or ``None`` (single process).
    """

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    backend: str | None = None

    @property
    def distributed(self) -> bool:
        return self.backend is not None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def slots(self, total: int) -> list[int]:
        """The task slots ``0 .. total - 1`` this rank runs (round-robin over ranks)."""
        if total < self.world:
            raise ValueError(
                f"--tasks-per-step {total} is smaller than the {self.world} processes: every "
                "rank needs at least one task"
            )
        return list(range(self.rank, total, self.world))

    def all_reduce_sum(self, x: Tensor) -> Tensor:
        """Sum of ``x`` over ranks (in place; returned)."""
        if self.distributed:
            dist.all_reduce(x, op=dist.ReduceOp.SUM)
        return x

    def agree(self, failure: BaseException | str | None, what: str) -> None:
        """Collective check: raise :class:`GroupError` on every rank if any rank failed.

        Every rank must call it at the same point with its own ``failure`` (``None`` when
        fine). The error names the failing ranks and, on those ranks, chains the cause.
        A single process has no one to tell: its own exception propagates unchanged.
        """
        if not self.distributed and isinstance(failure, BaseException):
            raise failure
        flags = torch.zeros(self.world, dtype=torch.float64, device=self.device)
        flags[self.rank] = 0.0 if failure is None else 1.0
        self.all_reduce_sum(flags)
        bad = [r for r in range(self.world) if flags[r] > 0]
        if not bad:
            return
        mine = f": {failure}" if failure is not None else ""
        message = f"{what} failed on rank(s) {bad} of {self.world}{mine}"
        if isinstance(failure, BaseException):
            raise GroupError(message) from failure
        raise GroupError(message)

    def broadcast_object(self, obj: object) -> object:
        """Rank 0's ``obj`` on every rank (pickled; for start-up state, not per step)."""
        if not self.distributed:
            return obj
        box = [obj if self.is_main else None]
        dist.broadcast_object_list(box, src=0, device=self._object_device())
        return box[0]

    def gather_objects(self, obj: object) -> list[object] | None:
        """Every rank's ``obj`` on rank 0 (``None`` elsewhere)."""
        if not self.distributed:
            return [obj]
        out = [None] * self.world if self.is_main else None
        dist.gather_object(obj, out, dst=0)
        return out

    def _object_device(self) -> torch.device | None:
        return self.device if self.backend == "nccl" else None

    def close(self) -> None:
        if self.distributed and dist.is_initialized():
            dist.destroy_process_group()


def init_group(device: str = "cpu", timeout_s: float = 1800.0) -> Group:
    """Join the ``torchrun`` group described by the environment, or a one-process group.

    Args:
        device: ``"cpu"``, ``"cuda"`` (each rank takes ``cuda:LOCAL_RANK``) or an explicit
            device for single-process runs.
        timeout_s: collective timeout: how long ranks wait for one that died.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Group(device=torch.device(device))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = torch.device(device)
    if dev.type == "cuda":
        dev = torch.device("cuda", local_rank)
        torch.cuda.set_device(dev)
        backend = "nccl"
    else:
        backend = "gloo"
    if not dist.is_initialized():
        dist.init_process_group(
            backend, timeout=datetime.timedelta(seconds=timeout_s),
            **({"device_id": dev} if backend == "nccl" else {}),
        )
    return Group(dist.get_rank(), dist.get_world_size(), local_rank, dev, backend)
