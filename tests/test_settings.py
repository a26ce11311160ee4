"""
Every setting is declared once, with its type and its range or choices, and a bad value is refused at start-up
with one line naming the flag, before anything is written. The cases are the issue's (#13) list of bad inputs
plus one of each class the declarations cover.
"""


import pytest
import torch

from helpers import assert_one_line_error, run_cli, run_cli_bound_by_permissions, tiny_config
from mingpt.app.run import train
from mingpt.app.settings import get_config, help_text
from mingpt.errors import UserError

BAD_VALUES = [  # (flags, words the one-line error must contain)
    # the examples
    (["--model.n_query_head=0"], "--model.n_query_head=0"),
    (["--model.n_embd=0"], "--model.n_embd=0"),
    (["--model.n_layer=-1"], "--model.n_layer=-1"),
    (["--trainer.learning_rate=-1"], "--trainer.learning_rate"),
    # a rate that float32 cannot hold overflowed inside the optimizer's step, after the run had written its files
    (["--trainer.optimizer=muon", "--trainer.muon_lr=1e300"], "--trainer.muon_lr=1e+300 must be > 0 and <= 1e+06"),
    (["--trainer.learning_rate=1e38"], "--trainer.learning_rate=1e+38 must be > 0 and <= 1e+06"),
    (["--trainer.betas=1.5"], "--trainer.betas"),
    (["--model.attn_pdrop=1.5"], "--model.attn_pdrop=1.5"),
    (["--trainer.weight_decay=-1"], "--trainer.weight_decay"),
    (["--trainer.grad_norm_clip=-1"], "--trainer.grad_norm_clip"),
    (["--trainer.eval_interval=-1"], "--trainer.eval_interval=-1"),
    (["--trainer.lr_decay_iters=abc"], "--trainer.lr_decay_iters"),
    (["--trainer.device=foo"], "--trainer.device=foo"),
    (["--system.seed=18446744073709551616"], "--system.seed"),
    (["--system.seed=2**64"], "--system.seed"),
    (["--sample.top_p=abc"], "--sample.top_p"),
    (["--system.work_dir="], "--system.work_dir"),
    (["--system.wandb=foo"], "--system.wandb=foo"),
    # numbers out of range, one per kind of range
    (["--system.seed=-1"], "--system.seed=-1"),
    (["--system.num_threads=0"], "--system.num_threads=0"),
    (["--data.block_size=0"], "--data.block_size=0"),
    (["--data.val_fraction=1"], "--data.val_fraction"),
    (["--data.val_fraction=0"], "--data.val_fraction"),
    (["--model.n_kv_head=0"], "--model.n_kv_head=0"),
    (["--model.embd_pdrop=1"], "--model.embd_pdrop"),
    (["--model.resid_pdrop=-0.1"], "--model.resid_pdrop"),
    (["--model.window=-1"], "--model.window=-1"),
    (["--trainer.max_iters=-1"], "--trainer.max_iters=-1"),
    (["--trainer.batch_size=0"], "--trainer.batch_size=0"),
    (["--trainer.learning_rate=0"], "--trainer.learning_rate"),
    (["--trainer.learning_rate=1e999"], "finite"),
    (["--trainer.betas=(1.5,0.9)"], "--trainer.betas"),
    (["--trainer.betas=(0.9,-0.1)"], "--trainer.betas"),
    (["--trainer.betas=(0.9,1e999)"], "finite"),
    (["--trainer.warmup_iters=-1"], "--trainer.warmup_iters=-1"),
    (["--trainer.lr_decay_iters=0"], "--trainer.lr_decay_iters=0"),
    (["--trainer.min_lr=-1"], "--trainer.min_lr"),
    (["--trainer.eval_iters=0"], "--trainer.eval_iters=0"),
    (["--trainer.log_interval=0"], "--trainer.log_interval=0"),
    (["--trainer.sample_interval=-1"], "--trainer.sample_interval=-1"),
    (["--trainer.checkpoint_interval=-1"], "--trainer.checkpoint_interval=-1"),
    (["--sample.max_new_tokens=-1"], "--sample.max_new_tokens=-1"),
    (["--sample.temperature=-1"], "--sample.temperature"),
    (["--sample.top_k=0"], "--sample.top_k=0"),
    (["--sample.top_p=0"], "--sample.top_p"),
    (["--sample.top_p=1.5"], "--sample.top_p"),
    (["--sample.prompt="], "--sample.prompt"),
    # wrong types and missing values
    (["--trainer.learning_rate=nan"], "--trainer.learning_rate"),
    (["--model.pretrained_folder="], "--model.pretrained_folder"),
    (["--system.wandb_project="], "--system.wandb_project"),
    (["--system.wandb_tags=a,,b"], "--system.wandb_tags"),
    (["--system.wandb_name="], "--system.wandb_name"),
    (["--data.input_file="], "--data.input_file"),
    # choices
    (["--trainer.lr_schedule=linear"], "--trainer.lr_schedule=linear"),
    (["--trainer.dtype=float8"], "--trainer.dtype=float8"),
    (["--model.model_type=lstm"], "--model.model_type=lstm"),
    (["--model.rnn_activation=relu"], "--model.rnn_activation=relu"),
    (["--model.pos_emb=alibi"], "--model.pos_emb=alibi"),
    (["--model.attn_impl=flash"], "--model.attn_impl=flash"),
    (["--model.gqa_scores=mean"], "--model.gqa_scores=mean"),
    # settings that must agree with each other
    (["--model.n_embd=50"], "--model.n_query_head"),
    (["--model.n_kv_head=4"], "--model.n_kv_head=4"),
    (["--model.n_kv_head=12"], "--model.n_kv_head=12"),
    (["--model.rope=True", "--model.pos_emb=learned"], "--model.pos_emb=learned"),
    (["--model.rope=True", "--model.n_embd=18"], "even head size"),
    (["--trainer.min_lr=0.01"], "--trainer.min_lr"),
]


@pytest.mark.parametrize("flags, needle", BAD_VALUES)
def test_bad_value_is_one_line_naming_the_flag(flags, needle):
    config = get_config()
    with pytest.raises(UserError) as e:
        config.merge_from_args(flags)
        config.validate()
    message = str(e.value)
    assert needle in message and "\n" not in message


def test_good_values_at_the_edges_of_their_ranges():
    config = get_config()
    config.merge_from_args(["--trainer.max_iters=0", "--trainer.grad_norm_clip=0", "--model.attn_pdrop=0",
                            "--trainer.betas=(0,0.999)", "--sample.top_p=1", "--sample.temperature=0",
                            "--system.seed=0", "--trainer.eval_interval=0", "--sample.top_k=None",
                            "--trainer.weight_decay=0", "--model.n_kv_head=1", "--trainer.device=cpu"])
    config.validate()


def test_every_setting_is_declared():
    """Each leaf of the config tree has a declared type (and, through --help, its range or choices)."""
    def nodes(node, prefix=""):
        for key, value in node.items():
            if hasattr(value, "items"):
                yield from nodes(value, prefix + key + ".")
            else:
                yield prefix + key, node, key
    for flag, node, key in nodes(get_config()):
        assert key in node._spec, f"--{flag} has no declaration"


def test_help_shows_ranges_and_choices():
    lines = {line.split()[0]: line for line in help_text(get_config()).splitlines() if line.strip().startswith("--")}
    assert "cosine | constant" in lines["--trainer.lr_schedule"]
    assert ">= 1" in lines["--model.n_layer"] and "[default: 6]" in lines["--model.n_layer"]
    assert "[0, 1)" in lines["--model.attn_pdrop"]
    assert "cuda" in lines["--trainer.device"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_cuda_suggests_cpu():
    config = get_config()
    config.merge_from_args(["--trainer.device=cuda"])
    with pytest.raises(UserError, match="--trainer.device=cuda.*--trainer.device=cpu"):
        config.validate()


def test_device_index_past_the_last_gpu():
    config = get_config()
    config.merge_from_args([f"--trainer.device=cuda:{torch.cuda.device_count()}"])
    with pytest.raises(UserError, match="--trainer.device=cuda:"):
        config.validate()


@pytest.mark.slow  # trains or samples in chargpt.py subprocesses
@pytest.mark.parametrize("flag", ["--system.wandb=foo", "--trainer.learning_rate=-1", "--trainer.device=foo",
                                  "--model.n_query_head=0", "--model.rope=True --model.n_embd=18"])
def test_cli_refuses_before_writing(tmp_path, text_file, flag):
    """Exit status 2, one line, no traceback, and the work_dir is not even created."""
    work_dir = tmp_path / "run"
    proc = run_cli(f"--data.input_file={text_file}", f"--system.work_dir={work_dir}", *flag.split())
    assert proc.returncode == 2
    assert_one_line_error(proc, flag.split()[-1].split("=")[0])
    assert not work_dir.exists()


def test_refused_flag_leaves_an_existing_run_untouched(tmp_path, text_file):
    work_dir = tmp_path / "run"
    train(tiny_config(text_file, work_dir))
    before = {p.name: p.read_bytes() for p in work_dir.iterdir() if p.is_file()}
    for flags in (["--trainer.betas=(2,0.9)"], ["--trainer.resume=True", "--model.n_layer=3"],
                  ["--sample.prompt=~~~"]):
        with pytest.raises(UserError):
            train(tiny_config(text_file, work_dir, *flags))
    assert {p.name: p.read_bytes() for p in work_dir.iterdir() if p.is_file()} == before


@pytest.mark.parametrize("make, needle", [
    (lambda p: p.write_text("x"), "is a file"),
    (lambda p: (p.parent / "file").write_text("x"), "which is a file"),
])
def test_work_dir_that_cannot_be_a_folder(tmp_path, text_file, make, needle):
    target = tmp_path / "wd"
    make(target)
    work_dir = target if target.exists() else tmp_path / "file" / "sub"
    with pytest.raises(UserError, match=needle):
        train(tiny_config(text_file, work_dir))


def test_work_dir_in_a_read_only_folder(tmp_path, text_file):
    """Bound by permissions (root is not, unless it gives up its overrides): the work_dir's parent is read-only."""
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        proc = run_cli_bound_by_permissions(f"--data.input_file={text_file}", f"--system.work_dir={folder}/run")
        assert_one_line_error(proc, "--system.work_dir", "not writable")
        assert list(folder.iterdir()) == []
    finally:
        folder.chmod(0o755)


def test_unreadable_input_file(tmp_path):
    """Bound by permissions (root is not, unless it gives up its overrides): the corpus cannot be read."""
    path = tmp_path / "secret.txt"
    path.write_text("hello there, a secret corpus\n" * 20)
    path.chmod(0)
    try:
        proc = run_cli_bound_by_permissions(f"--data.input_file={path}", f"--system.work_dir={tmp_path}/run")
        assert_one_line_error(proc, "cannot read --data.input_file")
        assert sorted(p.name for p in tmp_path.iterdir()) == ["secret.txt"]
    finally:
        path.chmod(0o644)


def test_model_too_large_for_memory(tmp_path, text_file):
    with pytest.raises(UserError, match="does not fit in this machine's memory"):
        train(tiny_config(text_file, tmp_path / "run", "--model.n_embd=4000000", "--model.n_query_head=1",
                          "--model.n_kv_head=1"))
    assert not (tmp_path / "run").exists()


def test_out_of_memory_in_training_is_one_line(tmp_path, text_file):
    with pytest.raises(UserError, match="out of memory in iteration 1; use a smaller --trainer.batch_size"):
        train(tiny_config(text_file, tmp_path / "run", "--trainer.batch_size=1000000000000"))


def test_num_threads_sets_torch_threads(tmp_path, text_file):
    threads = torch.get_num_threads()
    try:
        train(tiny_config(text_file, tmp_path / "run", "--system.num_threads=1", "--trainer.max_iters=1"))
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(threads)
