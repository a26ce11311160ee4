"""The experiments: each study at its quick scale (reads the corpus, trains through chargpt.py), then the report
built from their records. All slow. (tests/test_records.py: the records, resuming, --max-minutes.)"""

import json
import os
import shutil
import subprocess
import sys

import pytest

from helpers import ROOT, checkout_env, needs_corpus

pytestmark = pytest.mark.slow  # every test here runs the studies


# -----------------------------------------------------------------------------
# experiments (each study at its quick scale, then the report built from them)

COMPARE = {"final": {"run", "iters", "final_train_loss", "eval_train_loss", "val_loss", "seconds", "ms_per_iter"},
           "curves": {"run", "iter", "train_loss"}}
STUDIES = {  # study -> (training runs it makes, {table: columns it must have}, its plots, rows of final.csv)
    "rope": (2, COMPARE, ["loss"], ["learned positions", "RoPE"]),
    "context_extension": (4, {"final": {"run", "switch_iter", "val_loss_at_32", "val_loss_at_64"},
                              "curves": {"run", "iter", "block_size", "train_loss"}}, ["loss"],
                          ["learned positions", "RoPE"]),
    "gqa_cost": (4, {"cost": {"n_kv_head", "attention_ms", "attention_peak_mib_per_head",
                              "attention_peak_mib_group_sum", "attention_probe_mib", "kv_cache_bytes",
                              "cached_tokens_per_s"}}, ["cost"], None),
    "gqa_loss": (2, COMPARE, ["loss"], ["MHA (n_kv_head=6)", "GQA (n_kv_head=2)"]),
    "window": (4, {**COMPARE, "cost": {"N", "window", "naive_ms", "fast_ms", "sdpa_causal_ms", "naive_peak_bytes",
                                       "fast_peak_bytes", "sdpa_causal_peak_bytes"}}, ["loss", "cost"],
               ["full causal", "w=64", "w=32", "w=16"]),
    "positions": (4, {**COMPARE, "length": {"run", "length", "val_loss"}}, ["loss", "length", "tables"],
                  ["learned", "sinusoidal", "RoPE", "none"]),
    "rnn": (5, COMPARE, ["loss"], ["Transformer", "Elman RNN (slide)", "Elman RNN (tanh)",
                                   "BiRNN on prefixes (valid)", "BiRNN one pass (invalid)"]),
    "attention_analysis": (0, {"checks": {"check", "value", "expect"}}, ["angle_fit"], None),
    "tokenizers": (5, {"final": {"run", "vocab_size", "unk_rate", "chars_per_token", "val_bpc", "train_tokens_per_s",
                                 "train_chars_per_s", "gen_tokens_per_s", "gen_chars_per_s"},
                       "curves": {"run", "iter", "val_bpc"}}, ["bpc"],
                   ["char", "word 8000", "BPE 256", "BPE 512", "BPE 1024"]),
}


@pytest.fixture(scope="module")
def quick_studies(tmp_path_factory):
    """The studies' out/ folder; their records are in its sibling results/."""
    root = tmp_path_factory.mktemp("experiments")
    for name in STUDIES:
        proc = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", f"study_{name}.py"), "--scale=quick",
                               f"--out={root / 'out'}", f"--results={root / 'results'}", "--wandb=disabled"],
                              cwd=ROOT, capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL,
                              env=checkout_env())
        assert proc.returncode == 0, proc.stderr
    return root / "out"


def read_csv(path):
    import csv
    with open(path) as f:
        return list(csv.DictReader(f))


def assert_png(path):
    import matplotlib.image
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    height, width, _ = matplotlib.image.imread(path).shape
    assert height > 100 and width > 100


@needs_corpus
@pytest.mark.parametrize("name", list(STUDIES))
def test_study_quick_outputs(quick_studies, name):
    trainings, tables, plots, runs = STUDIES[name]
    folder = quick_studies / name / "quick"
    for table, columns in tables.items():
        rows = read_csv(folder / f"{table}.csv")
        assert rows and columns <= set(rows[0]), table
    if runs:
        assert [row["run"] for row in read_csv(folder / "final.csv")] == runs
    for plot in plots:
        assert_png(folder / f"{plot}.png")
    records = quick_studies.parent / "results" / name / "quick"
    plan = json.loads((records / "study.json").read_text())
    assert plan["scale"] == "quick" and len(plan["runs"]) == max(trainings, 1) + (name == "window")
    assert sorted(plan["runs"]) == sorted(n for n in os.listdir(records) if n != "study.json")
    commands = (folder / "commands.txt").read_text().splitlines()
    assert commands[0].startswith("python ") and len(commands) == 1 + trainings
    assert all(c.startswith("python chargpt.py ") for c in commands[1:])


@needs_corpus
def test_study_findings_at_quick_scale(quick_studies):
    """What the studies must show even at the smoke-test scale."""
    cost = read_csv(quick_studies / "gqa_cost" / "quick" / "cost.csv")
    cache = {int(r["n_kv_head"]): int(r["kv_cache_bytes"]) for r in cost}
    assert all(cache[n] * 6 == cache[6] * n for n in cache)  # exactly proportional to n_kv_head
    window = read_csv(quick_studies / "window" / "quick" / "cost.csv")
    assert all(float(r["fast_peak_bytes"]) < float(r["naive_peak_bytes"]) for r in window)
    length = read_csv(quick_studies / "positions" / "quick" / "length.csv")
    beyond = [r for r in length if int(r["length"]) > 32]
    assert all((r["val_loss"] == "") == (r["run"] in ("learned", "sinusoidal")) for r in beyond)
    checks = {r["check"][:3]: float(r["value"]) for r in read_csv(quick_studies / "attention_analysis" / "quick" / "checks.csv")}
    # 2b is 0 or a few ulps: S = Q Q^T in float64, entries <= 1.4, 16-term dot products whose summation order
    # differs between BLAS builds (5.6e-17 on an AMD EPYC); rounding bound 2 * 16 * 2^-53 * 1.4 = 5e-15 < 1e-14
    assert checks["1. "] < 1e-12 and checks["2b."] < 1e-14 and checks["2c."] > 1e-3 and checks["2d."] < 1e-12
    assert checks["3. "] > 1e-4
    r2 = [float(r["value"]) for r in read_csv(quick_studies / "attention_analysis" / "quick" / "checks.csv")
          if r["check"].startswith("4.")]
    assert r2[0] < 0.1 and r2[1] > 0.8  # concatenated cannot fit the angle, additive can
    tokenizers = {r["run"]: r for r in read_csv(quick_studies / "tokenizers" / "quick" / "final.csv")}
    assert float(tokenizers["char"]["unk_rate"]) == 0 and 0 < float(tokenizers["word 8000"]["unk_rate"]) < 0.2
    assert int(tokenizers["BPE 1024"]["vocab_size"]) == 1024
    assert float(tokenizers["BPE 256"]["chars_per_token"]) == 1  # bytes: tiny-shakespeare is ASCII
    assert float(tokenizers["BPE 1024"]["chars_per_token"]) > float(tokenizers["BPE 512"]["chars_per_token"]) > 1


@needs_corpus
def test_report_builds_from_quick_studies(quick_studies, tmp_path):
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "report.py"),
                           f"--results={quick_studies.parent / 'results'}", f"--report={tmp_path / 'REPORT.md'}"],
                          capture_output=True, text=True, timeout=120, env=checkout_env())
    assert proc.returncode == 0, proc.stderr
    report = (tmp_path / "REPORT.md").read_text()
    for name in STUDIES:
        assert f"## {name} (quick scale)" in report
        for plot in STUDIES[name][2]:
            assert_png(tmp_path / "report" / f"{name}_quick_{plot}.png")
            assert f"](report/{name}_quick_{plot}.png)" in report


@needs_corpus
def test_report_default_writes_beside_the_working_folder(quick_studies, tmp_path):
    """Without --report, report.py writes REPORT.md and report/ in the working folder (the checkout's), and the
    study summary of the README.md there."""
    shutil.copytree(quick_studies.parent / "results", tmp_path / "results")
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "report.py")], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120, env=checkout_env())
    assert proc.returncode == 0, proc.stderr
    assert sorted(os.listdir(tmp_path)) == ["REPORT.md", "report", "results"]
    assert "](report/attention_analysis_quick_angle_fit.png)" in (tmp_path / "REPORT.md").read_text()
    assert (tmp_path / "report" / "attention_analysis_quick_angle_fit.png").is_file()


@needs_corpus
def test_study_runs_on_wandb(tmp_path):
    """One group per study and scale, a run per setting with the config it trained with, and an analysis run of
    the study's own settings holding the figures, the tables and the samples."""
    from helpers import wandb_runs
    env = {k: v for k, v in checkout_env().items() if not k.startswith("WANDB_")}
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "study_rope.py"), "--scale=quick",
                           f"--out={tmp_path}", f"--results={tmp_path / 'results'}", "--wandb=offline"], cwd=ROOT,
                          capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL,
                          env={**env, "WANDB_SILENT": "true"})
    assert proc.returncode == 0, proc.stderr
    runs = {run["name"]: run for run in wandb_runs(tmp_path / "rope")}
    assert set(runs) == {"rope-quick/learned positions", "rope-quick/RoPE", "rope-quick/analysis"}
    assert {run["group"] for run in runs.values()} == {"rope-quick"}
    assert runs["rope-quick/RoPE"]["config"]["model"]["rope"] is True
    assert runs["rope-quick/learned positions"]["config"]["model"]["rope"] is False
    analysis = runs["rope-quick/analysis"]
    assert analysis["job_type"] == "analysis" and analysis["config"]["study"] == "rope"
    assert analysis["config"]["scale"] == "quick"
    logged = {key.removesuffix("/_type"): value for row in analysis["history"] for key, value in row.items()
              if key.endswith("/_type")}  # a media value's fields come as nested keys
    assert logged == {"loss": "image-file", "curves": "table-file", "final": "table-file", "samples": "table-file"}
    rows = next(row for row in analysis["history"] if "samples/nrows" in row)
    assert rows["samples/nrows"] == 2 and rows["final/nrows"] == 2


@needs_corpus
def test_gqa_cost_measures_the_courses_dtype(tmp_path):
    """The GQA cost study's figures stand beside the course's fp32 ones: its runs train in fp32 also where bf16
    is native (where `auto` would pick bf16)."""
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "study_gqa_cost.py"), "--scale=quick",
                           f"--out={tmp_path}", f"--results={tmp_path / 'results'}", "--wandb=disabled"], cwd=ROOT,
                          capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL, env=checkout_env())
    assert proc.returncode == 0, proc.stderr
    runs = tmp_path / "gqa_cost" / "quick" / "runs"
    dtypes = [json.loads((run / "config.json").read_text())["dtype"] for run in sorted(runs.iterdir())]
    assert dtypes == ["float32"] * 4
