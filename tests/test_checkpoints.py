"""
Malformed checkpoints and failing writes: every malformed file is one line naming it (never a traceback), a
write the OS refuses is one line and leaves the previous checkpoint loadable, and temporary files that a killed
write left behind are removed at the next start.
"""

import os
import shutil
import subprocess
import sys

import pytest
import torch

from helpers import ROOT, assert_one_line_error, run_cli, tiny_config
from mingpt.app.checkpoint import load_checkpoint
from mingpt.app.run import train
from mingpt.errors import UserError


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A finished tiny run (8 iterations, checkpoints every 4) and the text it trained on."""
    from helpers import made_up_text
    root = tmp_path_factory.mktemp("trained")
    text_file = root / "tiny.txt"
    text_file.write_text(made_up_text())
    train(tiny_config(str(text_file), root / "run"))
    return root / "run", str(text_file)


def edited(path, edit):
    """The checkpoint at `path` after `edit(checkpoint)` changed it in place."""
    ckpt = torch.load(path, weights_only=True)
    edit(ckpt)
    return ckpt


MALFORMED = {  # name -> (how to make the bad file from a good model.pt, words the error must contain)
    "empty": (lambda good, bad: bad.write_bytes(b""), "not a readable"),
    "truncated": (lambda good, bad: bad.write_bytes(good.read_bytes()[:2000]), "not a readable"),
    "garbage": (lambda good, bad: bad.write_bytes(b"garbage" * 100), "not a readable"),
    "a list": (lambda good, bad: torch.save([1, 2, 3], bad), "holds a list"),
    "a folder": (lambda good, bad: bad.mkdir(), "not a regular file"),
    "a pipe": (lambda good, bad: os.mkfifo(bad), "not a regular file"),
    "a tensor": (lambda good, bad: torch.save(torch.zeros(3), bad), "holds a Tensor"),
    "no weights": (lambda good, bad: torch.save(edited(good, lambda c: c.pop("model")), bad), "'model'"),
    "weights not tensors": (lambda good, bad: torch.save(
        edited(good, lambda c: c.update(model={"wte": 3})), bad), "state dict of tensors"),
    "short vocabulary": (lambda good, bad: torch.save(
        edited(good, lambda c: c.update(vocab=c["vocab"][:-2])), bad), "vocab_size"),
    "zero heads": (lambda good, bad: torch.save(
        edited(good, lambda c: c["model_config"].update(n_query_head=0)), bad), "n_query_head=0"),
    "unknown model type": (lambda good, bad: torch.save(
        edited(good, lambda c: c["model_config"].update(model_type="lstm")), bad), "model_type"),
    "vocabulary of words": (lambda good, bad: torch.save(
        edited(good, lambda c: c.update(vocab=["ab"] * len(c["vocab"]))), bad), "vocabulary"),
}


@pytest.mark.parametrize("name", list(MALFORMED))
def test_malformed_model_file_is_one_line(trained, tmp_path, name):
    run, _ = trained
    make, needle = MALFORMED[name]
    bad = tmp_path / "model.pt"
    make(run / "model.pt", bad)
    with pytest.raises(UserError) as e:
        load_checkpoint(str(bad))
    assert str(bad) in str(e.value) and needle in str(e.value) and "\n" not in str(e.value)


@pytest.mark.slow  # trains or samples in chargpt.py subprocesses
@pytest.mark.parametrize("name", ["truncated", "a tensor", "zero heads", "short vocabulary"])
def test_sample_from_malformed_model_file(trained, tmp_path, name):
    run, _ = trained
    make, needle = MALFORMED[name]
    make(run / "model.pt", tmp_path / "model.pt")
    proc = run_cli(f"--system.work_dir={tmp_path}", "--sample.only=True")
    assert proc.returncode == 2
    assert_one_line_error(proc, str(tmp_path / "model.pt"), needle)


@pytest.mark.slow  # trains or samples in chargpt.py subprocesses
def test_shapes_that_disagree_with_the_config(trained, tmp_path):
    """A state dict whose tensors do not fit the model its own config describes."""
    run, _ = trained
    ckpt = torch.load(run / "model.pt", weights_only=True)
    ckpt["model"]["transformer.wte.weight"] = ckpt["model"]["transformer.wte.weight"][:, :8]
    torch.save(ckpt, tmp_path / "model.pt")
    proc = run_cli(f"--system.work_dir={tmp_path}", "--sample.only=True")
    assert proc.returncode == 2
    assert_one_line_error(proc, "transformer.wte.weight", "shape")


@pytest.mark.parametrize("bad_resume, needle", [
    (lambda run: shutil.copy(run / "model.pt", run / "ckpt.pt"), "not a resume checkpoint"),
    (lambda run: (run / "ckpt.pt").write_bytes(b""), "not a readable"),
    (lambda run: torch.save(edited(run / "ckpt.pt", lambda c: c.pop("optimizer")), run / "ckpt.pt"),
     "not a resume checkpoint"),
    (lambda run: torch.save(edited(run / "ckpt.pt", lambda c: c.update(iter_num="8")), run / "ckpt.pt"),
     "'iter_num'"),
    (lambda run: torch.save(edited(run / "ckpt.pt", lambda c: c.update(iter_num=-1)), run / "ckpt.pt"), "negative"),
    (lambda run: torch.save(edited(run / "ckpt.pt", lambda c: c["logs"].update(train_losses=3)), run / "ckpt.pt"),
     "'logs'"),
    (lambda run: torch.save(edited(run / "ckpt.pt", lambda c: c.update(torch_rng=torch.zeros(3))),
                            run / "ckpt.pt"), "does not fit"),
    (lambda run: torch.save(edited(run / "ckpt.pt", lambda c: c["optimizer"].update(param_groups=[])),
                            run / "ckpt.pt"), "does not fit"),
])
def test_malformed_resume_checkpoint(trained, tmp_path, bad_resume, needle):
    run, text_file = trained
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    bad_resume(copy)
    before = {p.name: p.read_bytes() for p in copy.iterdir() if p.is_file()}
    with pytest.raises(UserError, match=needle):
        train(tiny_config(text_file, copy, "--trainer.resume=True", "--trainer.max_iters=12"))
    assert {p.name: p.read_bytes() for p in copy.iterdir() if p.is_file()} == before


def limit_file_size(max_bytes):
    def preexec():
        import resource
        resource.setrlimit(resource.RLIMIT_FSIZE, (max_bytes, max_bytes))
    return preexec


@pytest.mark.slow  # trains or samples in chargpt.py subprocesses
def test_refused_write_is_one_line_and_keeps_the_checkpoint(trained, tmp_path):
    """A file-size limit below the checkpoint's size makes its write fail with EFBIG (as a full disk fails with
    ENOSPC): one line, exit 2, and the checkpoint of iteration 8 still loads, with no temporary file left."""
    run, text_file = trained
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    ckpt_bytes = (copy / "ckpt.pt").stat().st_size
    flags = [f"--{key}={value}" for key, value in [
        ("data.input_file", text_file), ("system.work_dir", copy), ("system.wandb", "disabled"),
        ("data.block_size", 16), ("model.n_layer", 2), ("model.n_query_head", 4), ("model.n_kv_head", 2),
        ("model.n_embd", 32), ("trainer.batch_size", 8), ("trainer.eval_iters", 2), ("trainer.warmup_iters", 2),
        ("trainer.eval_interval", 4), ("trainer.log_interval", 4), ("trainer.sample_interval", 4),
        ("trainer.checkpoint_interval", 4), ("trainer.max_iters", 12), ("trainer.resume", True)]]
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "chargpt.py"), *flags], capture_output=True,
                          text=True, timeout=600, stdin=subprocess.DEVNULL, preexec_fn=limit_file_size(ckpt_bytes // 2))
    assert proc.returncode == 2, proc.stderr
    assert_one_line_error(proc, "cannot write", "File too large")
    assert load_checkpoint(str(copy / "ckpt.pt"), resume=True)["iter_num"] == 8
    assert not [p for p in os.listdir(copy) if p.endswith(".tmp")]


@pytest.mark.slow  # trains in chargpt.py subprocesses
@pytest.mark.parametrize("resume", [True, False])
def test_full_disk_at_start_is_one_line(trained, tmp_path, resume):
    """Nothing can be written from the start (a file-size limit of 0, as on a full disk): before the run's first
    write, torch's compile machinery, which the optimizer imports, looks for a writable temporary folder. One line,
    exit 2, the previous files as they were and no new folder."""
    run, text_file = trained
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    before = {p.name: p.read_bytes() for p in copy.iterdir()}
    work_dir = copy if resume else tmp_path / "fresh"
    flags = [f"--data.input_file={text_file}", f"--system.work_dir={work_dir}", "--system.wandb=disabled",
             "--data.block_size=16", "--model.n_layer=2", "--model.n_query_head=4", "--model.n_kv_head=2",
             "--model.n_embd=32", "--trainer.batch_size=8", "--trainer.eval_iters=2", "--trainer.warmup_iters=2",
             "--trainer.max_iters=12", f"--trainer.resume={resume}"]
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "chargpt.py"), *flags], capture_output=True, text=True,
                          timeout=300, stdin=subprocess.DEVNULL, preexec_fn=limit_file_size(0))
    assert_one_line_error(proc, "cannot write a temporary file")
    assert {p.name: p.read_bytes() for p in copy.iterdir()} == before
    assert resume or not work_dir.exists()


def test_stale_temporary_files_are_removed_at_start(trained, tmp_path):
    run, text_file = trained
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    (copy / ".ckpt.pt.k2j4_x9q.tmp").write_bytes(b"half a checkpoint")
    (copy / ".train_logs.json.a8b7c6d5.tmp").write_text("{")
    (copy / "notes.tmp").write_text("the user's own file")
    train(tiny_config(text_file, copy, "--trainer.resume=True", "--trainer.max_iters=10"))
    assert sorted(p for p in os.listdir(copy) if p.endswith(".tmp")) == ["notes.tmp"]


def test_resume_of_a_run_that_spelled_out_multi_head_attention(tmp_path, text_file):
    """Checkpoints from before n_kv_head could be unset hold its value; unset, it means the same model."""
    train(tiny_config(text_file, tmp_path / "run", "--model.n_kv_head=4", "--trainer.max_iters=2"))
    resumed = train(tiny_config(text_file, tmp_path / "run", "--model.n_kv_head=None", "--trainer.max_iters=4",
                                "--trainer.resume=True"))
    assert len(resumed.logs["train_losses"]) == 4
