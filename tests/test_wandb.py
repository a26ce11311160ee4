"""
What a run sends to wandb, read back offline from the .wandb records it wrote (no network, no login): the run's
identity across a resume, its name, group and tags, the config as resolved, the metric keys with their units,
the best validation loss, and wandb's own environment variables.
"""

import json

import pytest

from helpers import tiny_config, wandb_runs
from mingpt.app.dashboard import METRICS, default_run_name
from mingpt.app.metrics import LOG_LISTS, METRICS as DECLARED
from mingpt.app.run import train

EXPECTED_KEYS = {"train/loss", "val/loss", "val/bpc", "eval/train_loss", "lr", "perf/iter_ms", "perf/tokens_per_s", "perf/mfu",
                 "attn/time_ms", "attn/mem_mib", "gen/kv_cache_bytes", "gen/tokens_per_s"}


def test_every_metric_is_declared_once():
    """One declaration per metric (mingpt/app/metrics.py): one train_logs.json list and one wandb key each, and the
    lists are those of every run so far, in their order."""
    keys, logs = [m.key for m in DECLARED], [m.log for m in DECLARED if m.log]
    assert len(set(keys)) == len(keys) and len(set(logs)) == len(logs) and set(METRICS) == set(keys)
    assert LOG_LISTS == ("train_losses", "val_losses", "val_bpc", "eval_train_losses", "eval_elapsed_s",
                         "attention_computation_time", "attention_computation_memory", "attention_peak_memory_mib",
                         "learning_rates", "iter_time_ms", "tokens_per_s", "grad_norms", "clipped", "loss_scales",
                         "skipped_steps", "compile_s", "samples", "resumes")


@pytest.fixture
def offline(monkeypatch):
    """wandb as on a machine without a login: whatever the environment says, the tests set it themselves."""
    for var in ("WANDB_MODE", "WANDB_PROJECT", "WANDB_NAME", "WANDB_RUN_GROUP", "WANDB_TAGS", "WANDB_DIR",
                "WANDB_JOB_TYPE", "WANDB_RUN_ID", "WANDB_API_KEY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("WANDB_SILENT", "true")


@pytest.mark.parametrize("work_dir, name", [
    ("out/rope", "rope"), ("out/experiments_cpu/gqa_loss/kv2", "experiments_cpu/gqa_loss/kv2"),
    ("/home/me/lab/out/a/b/", "a/b"), ("runs/x", "runs/x"), ("out/out/y", "y"),
])
def test_default_run_name(work_dir, name):
    assert default_run_name(work_dir) == name


def test_run_records_identity_resolved_config_and_metrics(tmp_path, text_file, offline):
    work_dir = tmp_path / "out" / "exp" / "run1"
    trainer = train(tiny_config(text_file, work_dir, "--system.wandb=offline", "--system.wandb_group=g1",
                                "--system.wandb_tags=rope,small"))
    (run,) = wandb_runs(work_dir)
    assert run["name"] == "exp/run1" and run["group"] == "g1" and run["tags"] == ["rope", "small"]
    assert run["job_type"] == "train" and run["project"] == "chargpt" and run["exit_code"] == 0
    assert (work_dir / "wandb_run_id.txt").read_text().strip() == run["id"]

    config = run["config"]
    assert config["params"] == trainer.model.num_params() and config["device"] == "cpu"
    assert config["dtype"] == "float32" and config["torch"] and "cores" in config["machine"]
    assert config["model"]["pos_emb"] == "learned"  # None resolved
    assert config["trainer"]["device"] == "cpu" and config["trainer"]["lr_decay_iters"] == 8
    assert json.loads((work_dir / "config.json").read_text())["model"]["pos_emb"] == "learned"

    keys = set().union(*run["history"])
    assert EXPECTED_KEYS <= keys and EXPECTED_KEYS <= set(METRICS)
    rows = [row for row in run["history"] if "train/loss" in row]
    logs = json.loads((work_dir / "train_logs.json").read_text())
    assert [row["train/loss"] for row in rows] == pytest.approx(logs["train_losses"])
    assert [row["attn/time_ms"] for row in rows] == pytest.approx(logs["attention_computation_time"])
    assert all(0 < row["perf/mfu"] < 1 for row in rows)
    # MFU as defined: the model's FLOPs per iteration over the time, over a peak of this CPU's order
    flops = trainer.model.flops_per_token(16) * 16 * 8
    peak = [flops / (row["perf/iter_ms"] / 1000) / row["perf/mfu"] for row in rows]
    assert max(peak) == pytest.approx(min(peak), rel=1e-6) and 1e9 < peak[0] < 1e13
    # the course's names stay in train_logs.json, in MiB on a CPU too (what the core saves for backward)
    assert len(logs["attention_computation_memory"]) == 8 and all(m > 0 for m in logs["attention_computation_memory"])

    # KV cache of a generation: 2 layers x (K and V) x 2 kv heads x block 16 x head size 8 x 4 bytes
    gen = [row for row in run["history"] if "gen/kv_cache_bytes" in row]
    assert [row["gen/kv_cache_bytes"] for row in gen] == [2 * 2 * 2 * 16 * 8 * 4] * 2
    vals = logs["val_losses"]
    best_step, best = min(vals, key=lambda v: v[1])
    assert run["summary"]["val/best_loss"] == pytest.approx(best) and run["summary"]["val/best_step"] == best_step
    assert run["metrics"]["val/loss"].summary.min
    quiet = train(tiny_config(text_file, tmp_path / "quiet"))  # wandb off: the same training, to the bit
    assert quiet.logs["train_losses"] == logs["train_losses"]


def test_resume_continues_the_same_run(tmp_path, text_file, offline):
    work_dir = tmp_path / "out" / "r"
    train(tiny_config(text_file, work_dir, "--system.wandb=offline"))
    train(tiny_config(text_file, work_dir, "--system.wandb=offline", "--trainer.resume=True",
                      "--trainer.max_iters=12"))
    first, second = wandb_runs(work_dir)
    assert first["id"] == second["id"] and second["name"] == "r"
    steps = [row["_step"] for row in second["history"] if "train/loss" in row]
    assert steps == [9, 10, 11, 12]  # the second half of one curve
    train(tiny_config(text_file, work_dir, "--system.wandb=offline"))  # a new run in the same folder
    assert wandb_runs(work_dir)[-1]["id"] != first["id"]
    (work_dir / "wandb_run_id.txt").write_text("../not an id\n")  # damaged: the resume starts a new run
    train(tiny_config(text_file, work_dir, "--system.wandb=offline", "--trainer.resume=True",
                      "--trainer.max_iters=10"))
    assert len({run["id"] for run in wandb_runs(work_dir)}) == 3


def test_wandb_environment_variables(tmp_path, text_file, offline, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    train(_without_mode(tiny_config(text_file, tmp_path / "off", "--trainer.max_iters=1")))
    assert not (tmp_path / "off" / "wandb").exists()
    train(tiny_config(text_file, tmp_path / "flag", "--trainer.max_iters=1", "--system.wandb=offline"))
    assert wandb_runs(tmp_path / "flag")  # the flag wins over WANDB_MODE

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_PROJECT", "from_env")
    monkeypatch.setenv("WANDB_NAME", "env_name")
    train(_without_mode(tiny_config(text_file, tmp_path / "env", "--trainer.max_iters=1")))
    (run,) = wandb_runs(tmp_path / "env")
    assert run["project"] == "from_env" and run["name"] == "env_name"
    train(_without_mode(tiny_config(text_file, tmp_path / "both", "--trainer.max_iters=1",
                                    "--system.wandb_project=from_flag", "--system.wandb_name=flag_name")))
    (run,) = wandb_runs(tmp_path / "both")
    assert run["project"] == "from_flag" and run["name"] == "flag_name"


def test_no_login_means_offline_without_waiting(tmp_path, text_file, offline, monkeypatch):
    """No flag, no WANDB_MODE, no API key and no netrc login: an offline run, and no prompt (stdin is not read)."""
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc
    monkeypatch.setattr("sys.stdin", None)
    train(_without_mode(tiny_config(text_file, tmp_path / "out" / "auto", "--trainer.max_iters=1")))
    (run,) = wandb_runs(tmp_path / "out" / "auto")
    assert run["name"] == "auto" and run["exit_code"] == 0


def _without_mode(config):
    """tiny_config says --system.wandb=disabled; these runs leave the mode to the environment."""
    config.system.wandb = None
    return config

