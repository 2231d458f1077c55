"""Several processes training one cell: `torchrun --nproc_per_node N xkdbench distill ...`.

torchrun sets RANK, WORLD_SIZE and LOCAL_RANK; the first stage that asks for its device joins the
process group (gloo on CPU, nccl on CUDA, one GPU per rank). Everything else here is a no-op in a
single process, so the trainer calls these helpers unconditionally.

How a step is split (see `xkdbench.core.trainer`): every rank builds the same step's examples from the
same seeded order and keeps its own contiguous share of each micro-batch; the step's target-token count
is summed over ranks before the loss is divided by it, and the gradients are summed over ranks, so the
update is the token mean over the whole step on all ranks, as in one process with the whole batch.
The gradients are summed explicitly, once per optimiser step, rather than by wrapping the student in
`DistributedDataParallel`: a method may run the student several times per step (sampling, then the
loss), train modules of its own and accumulate micro-batches, and DDP expects one forward through the
wrapper per backward. Summing one flat buffer per step is what DDP's reducer does, minus the overlap.
"""
from __future__ import annotations

import os

import torch
import torch.distributed as dist


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def is_main_process() -> bool:
    return rank() == 0


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def local_device(device: torch.device) -> torch.device:
    """This process's device; under torchrun also joins the process group (once).

    CUDA ranks take the GPU of their LOCAL_RANK and nccl; CPU ranks take gloo."""
    if not launched_by_torchrun():
        return device
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return device


def barrier() -> None:
    if world_size() > 1:
        dist.barrier()


def sum_over_ranks(tensor: torch.Tensor) -> torch.Tensor:
    """The tensor summed over all ranks (in place; returned for chaining)."""
    if world_size() > 1:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def shard(items: list, what: str = "training.batch_size") -> list:
    """This rank's contiguous share of `items` (a micro-batch's examples); the count must divide evenly."""
    size = world_size()
    if size == 1:
        return items
    if len(items) % size:
        raise ValueError(f"{what}: {len(items)} examples per micro-batch do not split over {size} processes; "
                         f"allowed: a multiple of {size}")
    per_rank = len(items) // size
    return items[rank() * per_rank:(rank() + 1) * per_rank]


def sum_gradients(params: list[torch.nn.Parameter]) -> None:
    """Sum every parameter's gradient over the ranks, in one collective on one flat buffer.

    A parameter without a gradient on every rank keeps none (the optimiser then skips it, as in one
    process); one with a gradient on some ranks only gets zeros on the others first."""
    if world_size() <= 1 or not params:
        return
    device = params[0].device
    has_grad = torch.tensor([p.grad is not None for p in params], dtype=torch.float32, device=device)
    dist.all_reduce(has_grad, op=dist.ReduceOp.MAX)
    chosen = [p for p, flag in zip(params, has_grad.tolist(), strict=True) if flag]
    for p in chosen:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    if not chosen:
        return
    flat = torch.cat([p.grad.reshape(-1) for p in chosen])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    offset = 0
    for p in chosen:
        count = p.grad.numel()
        p.grad.copy_(flat[offset:offset + count].view_as(p.grad))
        offset += count


def broadcast_parameters(modules: list[torch.nn.Module]) -> None:
    """Rank 0's weights to every rank (they start equal anyway: same checkpoint, same seeded streams)."""
    if world_size() <= 1:
        return
    for module in modules:
        for tensor in [*module.parameters(), *module.buffers()]:
            dist.broadcast(tensor.data, src=0)


def gather_objects(obj) -> list:
    """[obj of rank 0, obj of rank 1, ...] on every rank."""
    if world_size() <= 1:
        return [obj]
    out = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out
