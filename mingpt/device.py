"""
Which device a run may use and what it is good at: the --trainer.device check and what "auto" means, native bf16,
the half precision that --trainer.dtype=auto means there (auto_dtype), whether autocast can run a dtype there, and
whether torch.compile can compile there.
"""

import importlib.util
import os
import shutil
import sys
import warnings

import torch

DEVICES = "auto | cpu | cuda | cuda:N | mps"


def device_problem(name):
    """Why this machine and torch build cannot run on device `name` (None when it can)."""
    if name == "auto":
        return None
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        return f"is not a device; use one of {DEVICES}"
    if device.type == "cuda":
        if not torch.cuda.is_available():
            build = "has no CUDA" if torch.version.cuda is None else "finds no GPU"
            return f"is not available: this torch ({torch.__version__}) {build}; use --trainer.device=cpu"
        if device.index is not None and device.index >= torch.cuda.device_count():
            return f"is not available: this machine has {torch.cuda.device_count()} GPU(s), numbered from 0"
    elif device.type == "mps":
        if not torch.backends.mps.is_available():
            return "is not available on this machine (Apple MPS); use --trainer.device=cpu"
    elif device.type != "cpu":
        return f"is not supported; use one of {DEVICES}"
    return None


def pick_device(name):
    """The device that setting `name` (already checked by device_problem) means on this machine."""
    if name != "auto":
        return name
    if torch.cuda.is_available():
        return "cuda"
    if torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def compile_problem(device):
    """Why torch.compile cannot compile for `device` here (None when it can): a Python that dynamo does not run on
    (torch.compile itself says so), and the compiler inductor's kernels need: a C++ compiler ($CXX, else g++; on
    macOS clang++) on a CPU, triton on CUDA."""
    try:
        torch.compile(lambda x: x)  # compiles nothing until called; raises at once where dynamo cannot run
    except RuntimeError as e:
        return str(e).strip().splitlines()[0]
    device_type = torch.device(device).type
    if device_type == "cpu":
        cxx = os.environ.get("CXX") or ("clang++" if sys.platform == "darwin" else "g++")
        if shutil.which(cxx) is None:
            return f"inductor compiles CPU kernels with a C++ compiler, and {cxx} is not on PATH (set $CXX)"
    if device_type == "cuda" and importlib.util.find_spec("triton") is None:
        return "inductor compiles CUDA kernels with triton, which is not installed"
    return None


def native_bf16(device_type, capability=None):
    """Whether this machine multiplies bf16 matrices in hardware: a CUDA GPU of compute capability 8.0 and up
    (Ampere on; capability: CUDA's (major, minor), None asks the current GPU), or a CPU with AMX or AVX512-BF16
    (torch's own capability queries). Elsewhere bf16 is emulated, and many times slower than fp32 (the README's
    training benchmark measures it): torch.cuda.is_bf16_supported() says yes to that emulation on a T4 or a V100."""
    if device_type == "cuda":
        major, _ = capability if capability is not None else torch.cuda.get_device_capability()
        return major >= 8
    if device_type == "cpu":
        return any(getattr(torch.cpu, query, lambda: False)()
                   for query in ("_is_amx_tile_supported", "_is_avx512_bf16_supported"))
    return False


def auto_dtype(device_type, capability=None):
    """The torch.dtype that --trainer.dtype=auto means on `device_type`: bfloat16 where it is native (CUDA compute
    capability 8.0 and up; CPUs with AMX or AVX512-BF16), float16 with loss scaling on older CUDA GPUs (a T4, a
    V100: capability 6.x and 7.x) and on MPS (what its autocast has everywhere), float32 elsewhere. capability:
    CUDA's (major, minor) of the GPU in question; None asks the current one."""
    if device_type == "cuda":
        return torch.bfloat16 if native_bf16("cuda", capability) else torch.float16
    if device_type == "mps":
        return torch.float16
    return torch.bfloat16 if native_bf16(device_type) else torch.float32


def autocast_problem(device_type, dtype):
    """Why torch.autocast cannot run `dtype` on `device_type` here (None when it can): torch refuses, or warns that
    it turns autocast off."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            with torch.autocast(device_type, dtype=dtype):
                pass
        except (RuntimeError, ValueError) as e:
            return str(e).strip().splitlines()[0]
    disabled = [w for w in caught if "autocast" in str(w.message).lower()]
    return str(disabled[0].message).strip().splitlines()[0] if disabled else None
