"""The ranks of a run agreeing. Under `torchrun` every process trains its own shard, and
whatever decides the run's course must come out the same on every rank:

- decisions made once, on rank 0, and handed to every rank (`on_rank0`: the checkpoint
  to resume, the precision, compiling); an error there ends every rank alike;
- stopping (a signal reached one rank) and the NaN guard (the earliest step with a
  non-finite loss): reduced across ranks (`agree`) at log and checkpoint steps and at
  least every `STOP_SYNC_EVERY` steps, never decided by a rank on its own;
- each rank's own state (image pools, RNG) gathered on rank 0 for the checkpoint (`gather`);
- at the end, a check that the networks' weights are the same on every rank.

With one process each of these is the local answer, with no collective.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable, TypeVar

import torch

from toonlab.errors import ToonlabError
from toonlab.log import get_logger
from toonlab.train.device import init_distributed, unwrap

log = get_logger(__name__)

STOP_SYNC_EVERY = 10    # under DDP, ranks agree on stop / NaN at least this often (in steps)
_BIG = 2**62

T = TypeVar("T")


@dataclass(frozen=True)
class Ranks:
    """This process's place in the run: `rank` of `world` processes, `local` on its node."""

    rank: int
    world: int
    local: int
    device: torch.device

    @classmethod
    def join(cls, device: torch.device) -> Ranks:
        """This process's ranks, the torchrun process group started if there is one."""
        rank, world, local = init_distributed()
        return cls(rank, world, local, device)

    def on_rank0(self, fn: Callable[[], T]) -> T:
        """Run `fn` on rank 0 and hand its (picklable) result to every rank; an error
        there ends every rank with the same exit status."""
        if self.world <= 1:
            return fn()
        import torch.distributed as dist

        payload: list[Any] = [None]
        if self.rank == 0:
            try:
                payload[0] = ("ok", fn())
            except Exception as exc:  # the other ranks must hear of it, or they wait forever
                payload[0] = ("error", str(exc), getattr(exc, "exit_code", 1))
                dist.broadcast_object_list(payload, src=0)
                raise
        dist.broadcast_object_list(payload, src=0)
        if payload[0][0] == "error":
            err = ToonlabError(f"rank 0 refused: {payload[0][1]}")
            err.exit_code = payload[0][2]
            raise err
        return payload[0][1]

    def agree(self, stop: bool, bad: torch.Tensor, step: int, due: bool) -> tuple[bool, int]:
        """(stop now, earliest step with a non-finite loss or -1) after `step`, the same on
        every rank. `stop`: a signal reached this rank; `bad`: its earliest non-finite step
        (a device tensor, -1: none); `due`: a log or checkpoint step. Under DDP the ranks
        agree (a reduction) when due and every `STOP_SYNC_EVERY` steps, and go on in
        between; alone, `bad` is read (a host sync) only when due or stopping."""
        if self.world <= 1:
            return stop, (int(bad) if due or stop else -1)
        if not (due or step % STOP_SYNC_EVERY == 0):
            return False, -1
        import torch.distributed as dist

        flag = torch.stack([torch.tensor(int(stop), device=self.device),
                            torch.where(bad >= 0, _BIG - bad, torch.zeros_like(bad))]).to(torch.long)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        stop_any, b = bool(flag[0] > 0), int(flag[1])
        return stop_any, (_BIG - b if b > 0 else -1)

    def gather(self, mine: Any) -> list[Any] | None:
        """Every rank's `mine` (tensors moved to the CPU), gathered on rank 0 (None
        elsewhere): a collective, so every rank calls it at the same steps."""
        mine = _to_cpu(mine)
        if self.world <= 1:
            return [mine]
        import torch.distributed as dist

        out: list[Any] | None = [None] * self.world if self.rank == 0 else None
        dist.gather_object(mine, out, dst=0)
        return out

    def check_in_sync(self, nets: Iterable[torch.nn.Module]) -> None:
        """Fail unless the networks' weights are the same on every rank."""
        if self.world <= 1:
            return
        import torch.distributed as dist

        sums = torch.stack([torch.cat([p.detach().double().flatten() for p in unwrap(n).parameters()]).sum()
                            for n in nets]).to(self.device)
        gathered = [torch.zeros_like(sums) for _ in range(self.world)]
        dist.all_gather(gathered, sums)
        if any(not torch.equal(g, gathered[0]) for g in gathered):
            raise ToonlabError("DDP ranks diverged: network weights differ across ranks")
        log.info("weights identical on all %d ranks", self.world)


def _to_cpu(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_cpu(v) for v in obj)
    return obj
