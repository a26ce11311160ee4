"""
Data-parallel training on PyTorch's own machinery: processes started by torchrun (torch.distributed.run), one
process group (nccl on CUDA, gloo otherwise), DistributedDataParallel to average the gradients.

    python chargpt.py ...                                          # one process: nothing distributed starts
    torchrun --standalone --nproc_per_node=2 chargpt.py ...         # two processes on this machine

torchrun tells each process who it is through RANK, LOCAL_RANK and WORLD_SIZE. Every process draws the same
global batch and trains on its own slice of it (Trainer.share), so the number of processes changes the speed,
not the run. Rank 0 alone writes files, prints and talks to wandb.
"""

import contextlib
import os

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from mingpt.errors import UserError


class Processes:
    """This process's place among the ones torchrun started (rank 0 of 1 without torchrun)."""

    def __init__(self, environ=os.environ):
        self.launched = "RANK" in environ and "WORLD_SIZE" in environ
        self.rank = int(environ.get("RANK", 0))
        self.local_rank = int(environ.get("LOCAL_RANK", 0))
        self.world_size = int(environ.get("WORLD_SIZE", 1))
        self.local_world_size = int(environ.get("LOCAL_WORLD_SIZE", 1))  # processes on this machine
        self.device = None

    @property
    def main(self):
        return self.rank == 0

    def device_for(self, device):
        """The device this process trains on: under torchrun, CUDA means the GPU numbered by LOCAL_RANK. Every
        process checks the GPU count, so that rank 0 says what is wrong before any process waits for the others."""
        if self.launched and torch.device(device).type == "cuda":
            gpus = torch.cuda.device_count()
            if 0 < gpus < self.local_world_size:  # no GPU at all: the device setting's own check says so
                raise UserError(f"torchrun started {self.local_world_size} processes on this machine, which has "
                                f"{gpus} GPU(s): one process per GPU; use --nproc_per_node={gpus} or fewer")
            return f"cuda:{self.local_rank}"
        return device

    def start(self, device):
        """Make `device` this process's current CUDA device (CUDA events and the streams they record on follow
        it, in one process on cuda:1 too); under torchrun, join the process group: nccl, told its device (its
        barrier would guess it), for CUDA devices, gloo for the rest."""
        self.device = torch.device(device)
        if self.device.type == "cuda" and self.device.index is not None:  # plain "cuda" is the current one
            torch.cuda.set_device(self.device)
        if not self.launched or dist.is_initialized():
            return
        if self.device.type == "cuda":
            dist.init_process_group("nccl", device_id=self.device)
        else:
            dist.init_process_group("gloo")

    def barrier(self):
        if dist.is_initialized():
            dist.barrier()

    def stop(self):
        if dist.is_initialized():
            dist.destroy_process_group()

    def wrap(self, model):
        """The module that training calls: DistributedDataParallel over `model` under torchrun, else `model`."""
        if not self.launched:
            return model
        # every buffer of these models is derived from the settings (rotary and sinusoidal tables, never saved):
        # rank 0 alone samples, which grows its rotary tables, so broadcasting rank 0's buffers before each forward
        # would send tensors of another size than the other ranks hold
        return DistributedDataParallel(model, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                                       broadcast_buffers=False)

    def sum(self, values):
        """The element-wise sum of the list `values` over all processes (the list itself for one)."""
        if not self.launched:
            return values
        total = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(total)
        return total.tolist()


def micro_batch_size(batch_size, grad_accum_steps, world_size):
    """Sequences in each micro-step of each process; one line naming the three numbers when they do not divide."""
    if batch_size % (world_size * grad_accum_steps):
        raise UserError(f"--trainer.batch_size={batch_size} does not split into {world_size} process(es) x "
                        f"--trainer.grad_accum_steps={grad_accum_steps} equal micro-batches; make the batch size "
                        f"a multiple of {world_size * grad_accum_steps}")
    return batch_size // (world_size * grad_accum_steps)


@contextlib.contextmanager
def quiet_unless(main):
    """Silence stdout and stderr inside the block unless `main`: ranks other than 0 print nothing (an exception
    that leaves the block still shows its traceback, on the restored stderr)."""
    if main:
        yield
        return
    with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull), contextlib.redirect_stderr(devnull):
        yield
