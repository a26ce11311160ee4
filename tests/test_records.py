"""Results that outlive the process: the studies' run records, a study started again (after it finished, after a
kill -9 at a random moment, after its --max-minutes), damaged records, and the report rebuilt from the records
alone. The studies run at their quick scale on a small made-up text."""

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time

import pytest

from helpers import ROOT, checkout_env, made_up_text

SUMMARY_START = "<!-- study summary: built by scripts/report.py from results/ -->"
SUMMARY_END = "<!-- end of the study summary -->"
RUN_KEYS = {"command", "config", "commit", "dirty", "date", "machine", "torch", "wall_s", "curve", "final", "sample"}


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """The rope study at its quick scale, made once: (its folder, with corpus.txt, results/ and out/)."""
    root = tmp_path_factory.mktemp("made")
    (root / "corpus.txt").write_text(made_up_text(20000))
    proc = study("rope", root / "corpus.txt", root)
    assert proc.returncode == 0, proc.stderr
    return root


@pytest.fixture
def corpus(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text(made_up_text(20000))
    return path


@pytest.fixture
def rope(made, tmp_path):
    """A copy of the made rope study in tmp_path (results/ and out/, the corpus at the same path as before)."""
    for name in ("results", "out"):
        shutil.copytree(made / name, tmp_path / name)
    return made / "corpus.txt"


def study(name, corpus, tmp_path, *extra, results="results"):
    """Run scripts/study_<name>.py at its quick scale in a subprocess; returns the CompletedProcess."""
    return subprocess.run([sys.executable, os.path.join(ROOT, "scripts", f"study_{name}.py"), "--scale=quick",
                           f"--corpus={corpus}", f"--results={tmp_path / results}", f"--out={tmp_path / 'out'}",
                           "--wandb=disabled", *extra], cwd=tmp_path, capture_output=True, text=True, timeout=600,
                          stdin=subprocess.DEVNULL, env=checkout_env())


def records(folder):
    """{file name: parsed record} of a study's records (its study.json aside)."""
    return {name: json.loads((folder / name).read_text()) for name in sorted(os.listdir(folder))
            if name != "study.json"}


def finals(folder):
    return {r["label"]: (r["final"]["val_loss"], r["final"]["train_loss"], r["train_losses"])
            for r in records(folder).values()}


def test_a_run_leaves_a_record_of_its_run(rope, tmp_path):
    folder = tmp_path / "results" / "rope" / "quick"
    recs = records(folder)
    assert len(recs) == 2
    plan = json.loads((folder / "study.json").read_text())["runs"]
    assert set(plan) == set(recs) and plan[0].startswith("learned_positions-") and plan[1].startswith("RoPE-")
    for name, record in recs.items():
        assert RUN_KEYS <= set(record) and os.path.getsize(folder / name) < 20_000
        assert record["command"].startswith("python chargpt.py ")
        assert set(record["machine"]) == {"cpu", "cores", "bf16_native", "gpu"}
        assert record["torch"] == __import__("torch").__version__
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
        assert record["commit"] == (head or None)
        # against the run's own files, written by chargpt's code path
        run_dir = record["command"].split("--system.work_dir=")[1].split()[0]
        logs = json.loads(open(os.path.join(run_dir, "train_logs.json")).read())
        assert [p["iter"] for p in record["curve"]] == [it for it, _ in logs["val_losses"]]
        assert [p["val_loss"] for p in record["curve"]] == [v for _, v in logs["val_losses"]]
        assert [p["train_loss"] for p in record["curve"]] == [v for _, v in logs["eval_train_losses"]]
        tokens_per_iter = 8 * 32  # the quick scale's batch and block
        assert [p["tokens"] for p in record["curve"]] == [it * tokens_per_iter for it, _ in logs["val_losses"]]
        elapsed = [p["elapsed_s"] for p in record["curve"]]
        assert elapsed == sorted(elapsed) and record["wall_s"] == elapsed[-1]
        assert record["final"]["iter"] == 15 == len(logs["train_losses"])
        assert record["final"]["val_loss"] == logs["val_losses"][-1][1]
        assert record["config"]["model"]["rope"] is ("RoPE" in name)
        assert record["sample"].startswith("O God, O God!") and len(record["sample"]) > 100


def test_a_finished_study_started_again_trains_nothing(rope, tmp_path):
    corpus = rope
    folder = tmp_path / "results" / "rope" / "quick"
    before = {name: (folder / name).read_bytes() for name in os.listdir(folder) if name != "study.json"}
    shutil.rmtree(tmp_path / "out")  # another machine: the records alone
    proc = study("rope", corpus, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("not made again") == 2 and "running on device" not in proc.stdout
    assert "2 of 2 runs recorded" in proc.stdout and "0 made by this start" in proc.stdout
    assert {name: (folder / name).read_bytes() for name in before} == before
    assert not (tmp_path / "out" / "rope" / "quick" / "runs").exists()
    assert (tmp_path / "out" / "rope" / "quick" / "loss.png").is_file()  # the figures, from the records


@pytest.mark.parametrize("damage", ["truncated", "foreign", "other key"])
def test_a_damaged_record_is_named_and_its_run_trained_again(rope, tmp_path, damage):
    corpus = rope
    folder = tmp_path / "results" / "rope" / "quick"
    damaged, kept = sorted(n for n in os.listdir(folder) if n != "study.json")
    good = (folder / damaged).read_text()
    kept_bytes = (folder / kept).read_bytes()
    text = {"truncated": good[:len(good) // 2], "foreign": json.dumps({"hello": "world"}),
            "other key": good.replace('"--model.rope=True"', '"--model.rope=False"')}[damage]
    assert text != good
    (folder / damaged).write_text(text)
    proc = study("rope", corpus, tmp_path)
    assert proc.returncode == 0, proc.stderr
    warnings = [line for line in proc.stderr.splitlines() if str(folder / damaged) in line]
    assert len(warnings) == 1 and "training that run again" in warnings[0]
    assert proc.stdout.count("not made again") == 1
    rewritten = json.loads((folder / damaged).read_text())
    assert rewritten["final"]["val_loss"] == json.loads(good)["final"]["val_loss"]  # seeded: the same run
    assert (folder / kept).read_bytes() == kept_bytes


def test_other_flags_add_records_and_the_report_shows_the_current_ones(rope, tmp_path):
    corpus = rope
    folder = tmp_path / "results" / "rope" / "quick"
    old = set(os.listdir(folder))
    other = tmp_path / "other.txt"
    other.write_text(made_up_text(20000, seed=1))
    proc = study("rope", other, tmp_path)
    assert proc.returncode == 0 and "not made again" not in proc.stdout
    assert old - {"study.json"} < set(os.listdir(folder)) and len(os.listdir(folder)) == 5
    report = tmp_path / "site" / "REPORT.md"
    report.parent.mkdir()
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "report.py"), f"--results={tmp_path / 'results'}",
                           f"--report={report}"], capture_output=True, text=True, env=checkout_env(), timeout=300)
    assert proc.returncode == 0, proc.stderr
    text = report.read_text()
    assert str(other) in text and f"--data.input_file={corpus} " not in text


@pytest.mark.parametrize("option, problem", [("--max-minutes=0", "--max-minutes=0"),
                                             ("--max-minutes=-5", "--max-minutes=-5"),
                                             ("--max-minutes=abc", "--max-minutes"),
                                             ("--results={file}", "is a file")])
def test_bad_options_are_one_line_before_anything(corpus, tmp_path, option, problem):
    (tmp_path / "a_file").write_text("x")
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "study_rope.py"), "--scale=quick",
                           f"--corpus={corpus}", f"--out={tmp_path / 'out'}",
                           *([] if option.startswith("--results") else [f"--results={tmp_path / 'results'}"]),
                           option.format(file=tmp_path / "a_file")], cwd=tmp_path, capture_output=True, text=True,
                          timeout=120, env=checkout_env())
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1 and problem in proc.stderr
    assert not (tmp_path / "results").exists() and not (tmp_path / "out").exists()


def test_a_study_without_its_corpus_is_one_line(tmp_path):
    """No input.txt and no network: chargpt's line, through the study, exit 2, no traceback."""
    proc = subprocess.run([sys.executable, "-c", "import urllib.request, runpy, sys\n"
                           "def offline(*a, **k): raise OSError('no network')\n"
                           "urllib.request.urlopen = offline\n"
                           f"sys.argv = ['study_rope.py', '--scale=quick', '--wandb=disabled']\n"
                           f"runpy.run_path({os.path.join(ROOT, 'scripts', 'study_rope.py')!r}, run_name='__main__')"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120, env=checkout_env())
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("error: data file") and len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "results").exists()


@pytest.mark.slow  # three studies through and a fourth killed and restarted
def test_killed_at_a_random_moment_then_started_again_ends_as_straight_through(corpus, tmp_path):
    t0 = time.time()
    assert study("gqa_loss", corpus, tmp_path, results="straight").returncode == 0
    straight_s = time.time() - t0
    moment = random.Random(os.getpid()).uniform(0.2, 0.9) * straight_s
    command = [sys.executable, os.path.join(ROOT, "scripts", "study_gqa_loss.py"), "--scale=quick",
               f"--corpus={corpus}", f"--results={tmp_path / 'killed'}", f"--out={tmp_path / 'out'}",
               "--wandb=disabled"]
    proc = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=checkout_env())
    time.sleep(moment)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    folder = tmp_path / "killed" / "gqa_loss" / "quick"
    for name in os.listdir(folder) if folder.exists() else []:  # whatever was written is whole
        json.loads((folder / name).read_text())
    proc = study("gqa_loss", corpus, tmp_path, results="killed")
    assert proc.returncode == 0, proc.stderr
    assert finals(folder) == finals(tmp_path / "straight" / "gqa_loss" / "quick"), f"killed after {moment:.1f} s"


def test_max_minutes_stops_with_the_command_to_go_on_and_the_rest_resumes(made, corpus, tmp_path):
    """A budget spent at the first iteration: that run stops at a checkpoint, the study says how to go on, and
    going on ends with the numbers of the study run straight through (on a copy of the same text)."""
    proc = study("rope", corpus, tmp_path, "--max-minutes=0.0001")
    assert proc.returncode == 0, proc.stderr
    line = next(line for line in proc.stdout.splitlines() if "--max-minutes=0.0001 spent" in line)
    assert "0 of 2 runs done, 2 left" in line and "go on with: python " in line
    assert line.endswith("study_rope.py --scale=quick " + " ".join(proc.args[3:]))
    runs = tmp_path / "out" / "rope" / "quick" / "runs"
    (first,) = os.listdir(runs)
    assert (runs / first / "ckpt.pt").is_file()  # stopped at its checkpoint
    proc = study("rope", corpus, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "resuming" in proc.stdout and "2 of 2 runs recorded" in proc.stdout
    assert finals(tmp_path / "results" / "rope" / "quick") == finals(made / "results" / "rope" / "quick")


def test_max_minutes_starts_only_runs_that_fit_by_the_records(rope, tmp_path):
    """Once a run is recorded, its pace predicts the next: a budget smaller than that starts nothing."""
    folder = tmp_path / "results" / "rope" / "quick"
    second = next(name for name in os.listdir(folder) if name.startswith("RoPE-"))
    os.remove(folder / second)
    shutil.rmtree(tmp_path / "out")
    for name, other in records(folder).items():  # the recorded pace: an hour a run
        other["wall_s"] = 3600.0
        (folder / name).write_text(json.dumps(other))
    proc = study("rope", rope, tmp_path, "--max-minutes=5")
    assert proc.returncode == 0, proc.stderr
    assert "1 of 2 runs done, 1 left (about 60.0 min)" in proc.stdout and "running on device" not in proc.stdout
    assert not (folder / second).exists()


def built_report(results, tmp_path, name):
    site = tmp_path / name
    site.mkdir()
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "report.py"), f"--results={results}",
                           f"--report={site / 'REPORT.md'}"], capture_output=True, text=True, env=checkout_env(),
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    return site


def test_the_report_from_the_records_alone_is_the_same_each_time(rope, tmp_path):
    assert study("attention_analysis", rope, tmp_path).returncode == 0
    shutil.rmtree(tmp_path / "out")
    results = tmp_path / "results"
    first, second = built_report(results, tmp_path, "a"), built_report(results, tmp_path, "b")
    assert (first / "REPORT.md").read_text().replace(str(first), "") == \
        (second / "REPORT.md").read_text().replace(str(second), "")
    figures = sorted(os.listdir(first / "report"))
    assert figures == ["attention_analysis_quick_angle_fit.png", "rope_quick_loss.png"]
    assert all((first / "report" / f).read_bytes() == (second / "report" / f).read_bytes() for f in figures)
    text = (first / "REPORT.md").read_text()
    assert "## rope (quick scale)" in text and "## attention_analysis (quick scale)" in text
    rope = json.loads(next((results / "rope" / "quick").glob("RoPE-*.json")).read_text())
    assert f"| RoPE | 15 | {rope['train_losses'][-1]:.4g} |" in text
    assert rope["date"][:10] in text and rope["machine"]["cpu"] in text and rope["torch"] in text


def test_the_report_says_which_sections_older_code_made(rope, tmp_path):
    folder = tmp_path / "results" / "rope" / "quick"
    git = lambda *args: subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True).stdout.strip()  # noqa
    last_change = git("log", "-n", "1", "--format=%H", "--", "mingpt")
    if not last_change:
        pytest.skip("not a git checkout")
    older = git("rev-parse", f"{last_change}^")
    for name, record in records(folder).items():
        record["commit"] = older if "RoPE" in name else "0" * 40
        (folder / name).write_text(json.dumps(record))
    text = (built_report(tmp_path / "results", tmp_path, "site") / "REPORT.md").read_text()
    assert f"mingpt/ differs from commit {older[:7]}" in text
    assert "Commit 0000000 is not in this checkout" in text


def test_the_report_fills_the_readme_summary_between_its_markers(rope, tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    readme = site / "README.md"
    readme.write_text("# title\n\nno summary here\n")
    command = [sys.executable, os.path.join(ROOT, "scripts", "report.py"), f"--results={tmp_path / 'results'}",
               f"--report={site / 'REPORT.md'}"]
    proc = subprocess.run(command, capture_output=True, text=True, env=checkout_env(), timeout=300)
    assert proc.returncode == 2 and "has no study summary" in proc.stderr
    assert not (site / "REPORT.md").exists() and readme.read_text() == "# title\n\nno summary here\n"
    readme.write_text(f"# title\n\n{SUMMARY_START}\nold\n{SUMMARY_END}\n\nafter\n")
    proc = subprocess.run(command, capture_output=True, text=True, env=checkout_env(), timeout=300)
    assert proc.returncode == 0, proc.stderr
    text = readme.read_text()
    assert "old" not in text and text.endswith(f"{SUMMARY_END}\n\nafter\n")
    assert "- **rope** (quick scale; " in text and "RoPE " in text


def test_report_without_records_is_one_line(tmp_path):
    for results in (tmp_path / "missing", tmp_path / "empty"):
        if results.name == "empty":
            results.mkdir()
        proc = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "report.py"), f"--results={results}",
                               f"--report={tmp_path / 'REPORT.md'}"], capture_output=True, text=True,
                              env=checkout_env(), timeout=120)
        assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
        assert not (tmp_path / "REPORT.md").exists()
