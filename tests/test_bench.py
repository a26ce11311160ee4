"""scripts/bench_train.py on a tiny model: one row per variant, each in its own dtype, and figures that agree with
each other (tokens/s is batch x block over the seconds per iteration)."""

import json
import os
import re
import subprocess
import sys

import pytest

from helpers import ROOT, assert_one_line_error, checkout_env

pytestmark = pytest.mark.slow  # it trains through chargpt.py in subprocesses


def test_bench_train_rows_per_variant(text_file):
    tiny = [f"--data.input_file={text_file}", "--data.block_size=16", "--model.n_layer=1", "--model.n_embd=32",
            "--model.n_query_head=2", "--model.n_kv_head=2", "--trainer.batch_size=4", "--trainer.device=cpu"]
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "bench_train.py"), "--iters=2", "--warmup=1",
                           "--variant=--trainer.dtype=float32 --trainer.probe_attention=False", "--", *tiny],
                          cwd=ROOT, capture_output=True, text=True, timeout=600, env=checkout_env(),
                          stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr
    rows = {}
    for line in proc.stdout.splitlines():
        cells = [c.strip() for c in line.split("|")]
        if len(cells) == 7 and cells[0].startswith("chargpt"):
            rows[cells[0]] = cells[1:]
    base = f"chargpt 1 x {os.cpu_count()}"
    variant = f"{base} --trainer.dtype=float32 --trainer.probe_attention=False"
    assert set(rows) == {base, variant}
    peaks = {dtype: float(gflops) for dtype, gflops in re.findall(r"matmul peak on cpu in (\w+): ([\d.]+) GFLOP/s",
                                                                  proc.stdout)}
    # each figure is printed rounded, and a slow or loaded machine runs this tiny model at a small fraction of a
    # GFLOP/s: every check allows for the rounding of the figures it compares, so that no speed fails it
    for dtype, ms, tokens_per_s, gflops, mfu, rss in rows.values():
        assert dtype in ("float32", "bfloat16")
        ms, tokens_per_s, gflops, mfu = float(ms), float(tokens_per_s), float(gflops), float(mfu.rstrip("%"))
        # ms/iter and tokens/s to a whole number: the time was within 0.5 ms of ms
        assert 4 * 16 / ((ms + 0.5) / 1000) - 0.5 <= tokens_per_s <= 4 * 16 / (max(ms - 0.5, 1e-9) / 1000) + 0.5
        # GFLOP/s and the peak to at least 3 significant digits (0.5% each), MFU to 0.1 percentage point: MFU is the
        # achieved rate over the peak of the row's own dtype
        assert gflops > 0 and peaks[dtype] > 0
        expected_mfu = 100 * gflops / peaks[dtype]
        assert mfu == pytest.approx(expected_mfu, abs=0.05 + 0.011 * expected_mfu)
        assert float(rss) > 50
    assert rows[variant][0] == "float32"


def test_bench_train_bad_variant_is_one_line():
    """A variant's flags are checked like chargpt's before anything runs: one line, exit 2, nothing measured."""
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "bench_train.py"),
                           "--variant=--trainer.dtype=float8"], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, env=checkout_env(), stdin=subprocess.DEVNULL)
    assert_one_line_error(proc, "--trainer.dtype=float8")
    assert proc.stdout == ""


@pytest.mark.parametrize("peer, script", [("--nanogpt", "train.py"), ("--mingpt", "chargpt.py")])
def test_bench_train_peer_without_its_script_is_one_line(tmp_path, peer, script):
    """A --nanogpt / --mingpt folder that is not such a checkout is named before anything runs."""
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "bench_train.py"), peer, str(tmp_path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120, env=checkout_env(),
                          stdin=subprocess.DEVNULL)
    assert_one_line_error(proc, str(tmp_path), script)
    assert proc.stdout == ""


def test_bench_train_batch_that_does_not_split_is_one_line():
    """The batch split is checked for every process count before the first row runs, not by torchrun mid-way."""
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "bench_train.py"), "--processes", "1", "3",
                           "--", "--trainer.batch_size=64"], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env=checkout_env(), stdin=subprocess.DEVNULL)
    assert_one_line_error(proc, "--trainer.batch_size=64", "3 process(es)")
    assert proc.stdout == ""


def test_bench_probe_reports_both_halves():
    """bench_probe times the default step with the probe on and off and prints the difference of the two."""
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "bench_probe.py"), "--steps=2", "--warmup=1",
                           "--", "--trainer.dtype=float32"], cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env=checkout_env(), stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr
    on, off, cost = map(float, re.search(r"probe on (\d+) ms, probe off (\d+) ms: the probe costs ([-+]\d+) ms",
                                         proc.stdout).groups())
    assert on > 0 and off > 0 and abs(on - off - cost) <= 1  # each figure is rounded to a whole ms
    assert "float32" in proc.stdout


@pytest.mark.parametrize("script, args, needle", [
    ("bench_train.py", ["--processes", "1", "0"], "--processes=0"),
    ("bench_train.py", ["--iters=0"], "--iters=0"),
    ("bench_probe.py", ["--steps=1"], "--steps=1"),
    ("bench_probe.py", ["--warmup=-1"], "--warmup=-1"),
    ("bench_probe.py", ["--", "--trainer.dtype=float8"], "--trainer.dtype=float8"),
    ("bench_probe.py", ["--", "--model.model_type=rnn"], "--model.model_type=rnn"),
    ("bench_generate.py", ["--new-tokens=0"], "--new-tokens=0"),
    ("bench_generate.py", ["--repeats=0"], "--repeats=0"),
    ("bench_generate.py", ["--kv-heads", "2", "4"], "--kv-heads=4"),
    ("bench_generate.py", ["--block-sizes", "0"], "--block-sizes=0"),
    ("bench_window.py", ["--repeats=0"], "--repeats=0"),
    ("bench_window.py", ["--sizes", "0"], "--sizes=0"),
    ("bench_birnn.py", ["--batch=0"], "--batch=0"),
    ("bench_birnn.py", ["--lengths", "8", "0"], "--lengths=0"),
    ("bench_data.py", ["--sizes-mb", "1", "0"], "--sizes-mb=0"),
    ("bench_data.py", ["--repeats=0"], "--repeats=0"),
])
def test_bench_bad_counts_and_flags_are_one_line(script, args, needle):
    """Counts out of range and bad chargpt flags are named in one line before anything is measured."""
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", script), *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=120, env=checkout_env(), stdin=subprocess.DEVNULL)
    assert_one_line_error(proc, needle)
    assert proc.stdout == ""


def test_bench_data_builds_then_runs(tmp_path, text_file):
    """scripts/bench_data.py on a 1 MB corpus: the build's row, and the entry its run then used (one per cache)."""
    work = tmp_path / "work"
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "bench_data.py"), "--sizes-mb", "1",
                           "--tokenizers", "char", "--repeats", "1", f"--source={text_file}", f"--work={work}",
                           "--keep"], cwd=ROOT, capture_output=True, text=True, timeout=600, env=checkout_env(),
                          stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr
    assert any(line.startswith("| 1 MB | char |") for line in proc.stdout.splitlines())
    with open(work / "results.json") as f:
        (build,) = json.load(f)["builds"]
    assert build["build_s"] > 0 and build["mb_per_s"] == pytest.approx(1 / build["build_s"])
    assert os.path.getsize(work / "corpus_1mb.txt") == 1_000_000  # tiny-shakespeare-like lines, ASCII
    entries = [n for n in os.listdir(work / "cache") if not n.startswith(".")]
    assert len(entries) == 1 and entries[0].startswith("char-")

