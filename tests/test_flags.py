"""Flags: values, merging, errors with their suggestions, checks of impossible combinations, --help."""

import pytest

from helpers import model_config, run_cli
from mingpt.app.settings import get_config
from mingpt.config import CfgNode, parse_value
from mingpt.errors import UserError
from mingpt.model import GPT


# -----------------------------------------------------------------------------
# flags

def test_parse_value_kinds():
    assert parse_value("3") == 3 and isinstance(parse_value("3"), int)
    assert parse_value("5e-4") == 5e-4
    assert parse_value("True") is True and parse_value("true") is True
    assert parse_value("False") is False and parse_value("false") is False
    assert parse_value("None") is None
    assert parse_value("(0.9,0.99)") == (0.9, 0.99)
    assert parse_value("./out/x") == "./out/x"
    assert parse_value("/tmp/x") == "/tmp/x"
    assert parse_value("hello") == "hello"


def test_merge_from_args_every_kind():
    c = get_config()
    c.merge_from_args(["--trainer.max_iters=7", "trainer.learning_rate=1e-3", "--model.rope=true",
                       "--model.pretrained_folder=./out/x", "--system.work_dir=/tmp/x", "--trainer.betas=(0.8,0.9)",
                       "--trainer.lr_decay_iters=None", "--trainer.weight_decay=0", "--system.wandb_group=g1",
                       "--data.input_file=123"])
    assert c.trainer.max_iters == 7 and c.trainer.learning_rate == 1e-3 and c.model.rope is True
    assert c.model.pretrained_folder == "./out/x" and c.system.work_dir == "/tmp/x"
    assert c.trainer.betas == (0.8, 0.9) and c.trainer.lr_decay_iters is None
    assert c.trainer.weight_decay == 0.0 and isinstance(c.trainer.weight_decay, float)
    assert c.system.wandb_group == "g1"
    assert c.data.input_file == "123"  # a string setting keeps the text as written


@pytest.mark.parametrize("flag, needles", [
    ("--model.n_heads=4", ["unknown config key --model.n_heads", "--model.n_query_head"]),
    ("--trainer.max_iter=4", ["--trainer.max_iters"]),
    ("--nonsense.key=1", ["unknown config key"]),
    ("--trainer.max_iters=abc", ["--trainer.max_iters", "expected int"]),
    ("--trainer.max_iters=2.5", ["expected int"]),
    ("--model.rope=1", ["--model.rope", "expected bool"]),
    ("--trainer.betas=0.9", ["--trainer.betas", "tuple"]),
    ("--model.block_size=256", ["--model.block_size", "--data.block_size"]),
    ("--model.vocab_size=3", ["--model.vocab_size", "set from the data"]),
    ("--trainer", ["--node.key=value"]),
])
def test_flag_errors(flag, needles):
    with pytest.raises(UserError) as e:
        get_config().merge_from_args([flag])
    for needle in needles:
        assert needle in str(e.value)


@pytest.mark.parametrize("flags, needle", [
    (["--model.n_embd=50"], "n_embd=50 must be divisible by --model.n_query_head=6"),
    (["--model.n_kv_head=4"], "must be a multiple of --model.n_kv_head=4"),
    (["--model.window=-2"], "--model.window=-2 must be >= 0"),
    (["--model.rope=True", "--model.pos_emb=learned"], "--model.rope=True replaces the position table"),
    (["--model.pos_emb=alibi"], "--model.pos_emb=alibi must be one of"),
    (["--model.attn_impl=flash"], "--model.attn_impl=flash must be one of"),
])
def test_model_flag_checks(flags, needle):
    config = model_config()
    config.n_query_head, config.n_kv_head, config.n_embd = 6, 6, 48
    wrapper = CfgNode(model=config)
    wrapper.merge_from_args(flags)
    with pytest.raises(UserError, match=needle.replace("(", r"\(").replace(".", r"\.")):
        GPT(config)


def test_help_lists_every_key():
    proc = run_cli("--help")
    assert proc.returncode == 0
    for key, value, _ in get_config().flat():
        assert f"--{key}" in proc.stdout
    assert "[default: 3407]" in proc.stdout


GPT_RULES_BROKEN = [["--model.n_embd=64"], ["--model.n_query_head=2", "--model.n_embd=32", "--model.n_kv_head=4"],
                    ["--model.n_kv_head=4"], ["--model.rope=True", "--model.pos_emb=learned"],
                    ["--model.rope=True", "--model.n_embd=18"]]


@pytest.mark.parametrize("flags", GPT_RULES_BROKEN)
@pytest.mark.parametrize("model_type", ["gpt", "rnn", "birnn_invalid", "birnn_prefix"])
def test_attention_rules_apply_to_the_gpt_alone(model_type, flags):
    """A recurrent model has no heads and no positions: the rules between those settings stop a GPT only."""
    config = get_config()
    config.merge_from_args([f"--model.model_type={model_type}", *flags])
    if model_type == "gpt":
        with pytest.raises(UserError):
            config.validate()
        return
    config.validate()
    config.model.vocab_size, config.model.block_size = 11, 8
    from mingpt.app.settings import build_model
    build_model(config.model)


def test_unset_n_kv_head_is_multi_head_attention():
    config = model_config(n_kv_head=None, n_query_head=4)
    config.validate("model.")
    assert {attn.n_kv_head for attn in GPT(config).attention_modules()} == {4}
    defaults = get_config()  # the defaults with 4 query heads pass the rules
    defaults.merge_from_args(["--model.n_query_head=4"])
    defaults.validate()
    with pytest.raises(UserError, match="--model.n_kv_head=3"):  # an explicit value is still checked
        defaults.merge_from_args(["--model.n_kv_head=3"])
        defaults.validate()


@pytest.mark.parametrize("model_type, ignored", [
    ("gpt", "--model.rnn_activation"),
    ("rnn", "--model.n_query_head, --model.n_kv_head, --model.rope"),
    ("birnn_prefix", "--model.n_layer, --model.n_query_head, --model.n_kv_head, --model.rope"),
])
def test_flags_the_model_ignores_are_one_warning(tmp_path, text_file, capsys, model_type, ignored):
    from helpers import tiny_config
    from mingpt.app.run import train
    rope = [] if model_type == "gpt" else ["--model.rope=True"]
    train(tiny_config(text_file, tmp_path / "run", f"--model.model_type={model_type}", "--model.rnn_activation=tanh",
                      *rope, "--trainer.max_iters=1", "--trainer.warmup_iters=0", "--trainer.sample_interval=0"))
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning: ")]
    assert warnings == [f"warning: --model.model_type={model_type} does not use {ignored}; ignoring "
                        f"{'it' if ',' not in ignored else 'them'}"]


@pytest.mark.parametrize("flags, warning", [
    (["--trainer.muon_lr=0.05"], "--trainer.optimizer=adamw with --trainer.lr_schedule=cosine does not use "
                                 "--trainer.muon_lr; ignoring it"),
    (["--trainer.decay_fraction=0.3", "--trainer.optimizer=muon"],
     "--trainer.optimizer=muon with --trainer.lr_schedule=cosine does not use --trainer.decay_fraction; ignoring it"),
    (["--trainer.decay_fraction=0.3", "--trainer.lr_schedule=wsd", "--trainer.muon_lr=0.05",
      "--trainer.optimizer=muon"], None),
])
def test_trainer_flags_their_settings_do_not_use_are_one_warning(tmp_path, text_file, capsys, flags, warning):
    from helpers import tiny_config
    from mingpt.app.run import train
    train(tiny_config(text_file, tmp_path / "run", *flags, "--trainer.max_iters=1", "--trainer.warmup_iters=0",
                      "--trainer.sample_interval=0"))
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning: ")]
    assert warnings == ([f"warning: {warning}"] if warning else [])
