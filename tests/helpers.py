"""
Helpers shared by the test files, which import them with `from helpers import ...` (pyproject.toml puts tests/ on
pytest's pythonpath). The `text_file` fixture is in conftest.py.
"""

import os
import shutil
import subprocess
import sys
import time

import pytest
import torch

from mingpt.app.settings import get_config
from mingpt.model import GPT

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the repository: chargpt.py, scripts/
CORPUS = os.path.join(ROOT, "input.txt")

# the devices a device-dependent test runs on: the CPU, and CUDA where there is a GPU (marked, for check_gpu.py)
DEVICES = ["cpu"] + ([pytest.param("cuda", marks=pytest.mark.cuda)] if torch.cuda.is_available() else [])

needs_corpus = pytest.mark.skipif(not os.path.exists(CORPUS), reason="input.txt (tiny-shakespeare) not in place")


def made_up_text(n_chars=6000, seed=0):
    """A small text with structure a tiny model can learn: words from a short list."""
    g = torch.Generator().manual_seed(seed)
    words = ["the ", "king ", "queen ", "shall ", "speak ", "now, ", "and ", "we ", "go. ", "O ", "God! "]
    out = []
    while sum(map(len, out)) < n_chars:
        out.append(words[int(torch.randint(len(words), (1,), generator=g))])
    return "".join(out)[:n_chars]


def tiny_config(text_file, work_dir, *flags):
    """A tiny run's config, on the CPU (tests compare with CPU tensors) in fp32 (auto would be bf16 on CPUs with
    native bf16, and the tests' tolerances are fp32's) unless a flag says otherwise."""
    config = get_config()
    config.merge_from_args([
        f"--data.input_file={text_file}", f"--system.work_dir={work_dir}", "--system.wandb=disabled",
        "--data.block_size=16", "--model.n_layer=2", "--model.n_query_head=4", "--model.n_kv_head=2",
        "--model.n_embd=32", "--trainer.batch_size=8", "--trainer.max_iters=8", "--trainer.eval_interval=4",
        "--trainer.eval_iters=2", "--trainer.log_interval=4", "--trainer.sample_interval=4",
        "--trainer.checkpoint_interval=4", "--trainer.warmup_iters=2", "--trainer.device=cpu",
        "--trainer.dtype=float32", *flags])
    return config


def model_config(**overrides):
    C = GPT.get_default_config()
    settings = dict(vocab_size=11, block_size=64, n_layer=2, n_query_head=6, n_kv_head=6, n_embd=48,
                    embd_pdrop=0.0, resid_pdrop=0.0, attn_pdrop=0.0)
    C.merge_from_dict({**settings, **overrides})
    return C


def run_cli(*args, cwd=ROOT, timeout=600):
    return subprocess.run([sys.executable, os.path.join(ROOT, "chargpt.py"), *args], cwd=cwd,
                          capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


# root reads and writes whatever the permissions say, through two capabilities; without them, root's own files bind
# it as they bind their owner (every machine here and CI run the tests as root)
WITHOUT_OVERRIDES = ["setpriv", "--bounding-set=-dac_override,-dac_read_search",
                     "--inh-caps=-dac_override,-dac_read_search"]


def run_cli_bound_by_permissions(*args, timeout=600):
    """chargpt.py run so that file permissions bind it: as it is for a user other than root, and for root without
    the capabilities that override them (util-linux's setpriv), so that a permission check meets the real refusal."""
    prefix = []
    if os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.skip("root without util-linux's setpriv cannot give up the permission overrides")
        prefix = WITHOUT_OVERRIDES
    return subprocess.run([*prefix, sys.executable, os.path.join(ROOT, "chargpt.py"), *args], cwd=ROOT,
                          env={**checkout_env(), "WANDB_MODE": "disabled"}, capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


def assert_one_line_error(proc, *needles):
    """Bad input: exit status 2, one line on stderr with each needle, no traceback."""
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def snapshot(folder):
    """Every file and folder under `folder` (a pathlib.Path), a file with its bytes and modification time: equal
    before and after a refusal when nothing was written, changed or removed."""
    return {path: (path.read_bytes(), path.stat().st_mtime_ns) if path.is_file() else None
            for path in sorted(folder.rglob("*"))}


def full_forward_greedy_matches(model, seq, prompt_len):
    """Each generated token is the argmax of one full forward pass over the whole sequence."""
    logits, _ = model(seq)
    return torch.equal(logits[:, prompt_len - 1:-1].argmax(-1), seq[:, prompt_len:])


def checkout_env():
    """The environment for running scripts/: this checkout's mingpt comes first on their path, so the tests check
    this checkout's code even when the environment's `pip install -e .` points at another one."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")]))}


def wandb_runs(folder):
    """What the offline wandb runs under `folder` recorded, read back from their .wandb files (LevelDB-style
    log blocks of wandb's protobuf records), oldest first: one dict per file with the run record's fields, the
    config, each history row, the last summary values, the metric definitions and the exit code."""
    import glob
    import json
    from wandb.proto import wandb_internal_pb2 as pb

    def key(item):
        return item.key or "/".join(item.nested_key)

    def read(path):
        with open(path, "rb") as f:
            data = f.read()
        assert data[:4] == b":W&B", path
        run = {"history": [], "summary": {}, "metrics": {}, "exit_code": None}
        block, pos, chunks = 32768, 7, []
        while pos + 7 <= len(data):
            if block - pos % block < 7:  # a block's tail too short for a header is padding
                pos += block - pos % block
                continue
            length, kind = int.from_bytes(data[pos + 4:pos + 6], "little"), data[pos + 6]
            chunks.append(data[pos + 7:pos + 7 + length])
            pos += 7 + length
            if kind not in (1, 4):  # FIRST and MIDDLE fragments wait for the LAST one
                continue
            record = pb.Record()
            record.ParseFromString(b"".join(chunks))
            chunks = []
            which = record.WhichOneof("record_type")
            if which == "run":
                r = record.run
                run.update(id=r.run_id, name=r.display_name, group=r.run_group, job_type=r.job_type,
                           tags=list(r.tags), project=r.project,
                           config={key(u): json.loads(u.value_json) for u in r.config.update})
            elif which == "history":
                run["history"].append({key(i): json.loads(i.value_json) for i in record.history.item})
            elif which == "summary":
                run["summary"].update({key(u): json.loads(u.value_json) for u in record.summary.update})
            elif which == "metric":
                run["metrics"][record.metric.name] = record.metric
            elif which == "exit":
                run["exit_code"] = record.exit.exit_code
        return run

    runs = []
    for path in sorted(glob.glob(os.path.join(folder, "**", "offline-run-*", "*.wandb"), recursive=True),
                       key=os.path.getmtime):
        # wandb's service process writes the file: on a loaded machine its last records may land a moment after
        # finish() returns, so read until the exit record is there (a run that never ended is read as it is)
        deadline = time.monotonic() + 20
        while (run := read(path))["exit_code"] is None and time.monotonic() < deadline:
            time.sleep(0.5)
        runs.append(run)
    return runs
