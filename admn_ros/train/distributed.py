"""Distributed helpers: `torchrun` sets RANK / WORLD_SIZE / LOCAL_RANK; gloo on CPU, nccl on GPU."""

from __future__ import annotations

import os

import torch
import torch.distributed as dist


def init_distributed(device: str = "auto") -> torch.device:
    """Join the process group when launched by torchrun; return this rank's device."""
    use_cuda = torch.cuda.is_available() if device == "auto" else device == "cuda"
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device: expected a CUDA GPU for device=cuda, found none")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo")
    if use_cuda:
        torch.cuda.set_device(local)
        return torch.device("cuda", local)
    return torch.device("cpu")


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main() -> bool:
    return rank() == 0


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def mean_across_ranks(values: dict[str, float]) -> dict[str, float]:
    """Average a dict of scalars over ranks (same keys on every rank)."""
    if not is_distributed() or not values:
        return values
    keys = sorted(values)
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64)
    dist.all_reduce(t)
    return {k: float(v) / world_size() for k, v in zip(keys, t.tolist(), strict=True)}


def any_rank(flag: bool) -> bool:
    """True if `flag` is True on any rank (e.g. a non-finite loss)."""
    if not is_distributed():
        return flag
    t = torch.tensor([1.0 if flag else 0.0])
    dist.all_reduce(t)
    return bool(t.item() > 0)


def cleanup() -> None:
    if is_distributed():
        dist.destroy_process_group()
