"""
Build REPORT.md, its figures and the README's study summary from the studies' records alone (results/<study>/
<scale>/*.json, written by scripts/study_*.py): no run folder, no out/ needed, so any checkout rebuilds them.

    python scripts/report.py                                   # results/ -> REPORT.md, report/, README.md's summary
    python scripts/report.py --results DIR --report PATH       # PATH's folder gets report/ (and README.md's summary
                                                               # where that folder has a README.md)

Each section is one study at one scale, from the runs its last start planned (results/<study>/<scale>/study.json):
it names the date, machine, torch version and commit of its runs, and says so where mingpt/ has changed since that
commit. A study whose runs are not all recorded gets a line saying how many are, and the command that goes on.
The same records give the same files, figures included.
"""

import argparse
import io
import json
import os
import sys

from PIL import Image

from mingpt.app.files import check_writable_folder, save_text
from mingpt.errors import fail
from mingpt.errors import UserError
from mingpt.experiments.records import DamagedRecord, changed_since, git, read_record
from mingpt.experiments.study_report import samples_table, section
from mingpt.utils import atomic_open

SCALE_ORDER = ("quick", "cpu", "full")
SUMMARY_START = "<!-- study summary: built by scripts/report.py from results/ -->"
SUMMARY_END = "<!-- end of the study summary -->"


def cell(value):
    """Floats to 4 significant digits; integers and words as they are (with | escaped for markdown)."""
    if value is None:
        return ""
    if isinstance(value, bool) or isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value).replace("|", "\\|")


def markdown_table(rows):
    columns = list(rows[0])
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    return "\n".join(lines + ["| " + " | ".join(cell(row.get(c)) for c in columns) + " |" for row in rows])


def studies(results):
    """[(study, scale, plan)] of every results/<study>/<scale>/study.json, in name and scale order."""
    found = []
    for name in sorted(os.listdir(results)):
        for scale in sorted(os.listdir(os.path.join(results, name)) if os.path.isdir(os.path.join(results, name))
                            else [], key=lambda s: (SCALE_ORDER.index(s) if s in SCALE_ORDER else 9, s)):
            path = os.path.join(results, name, scale, "study.json")
            if os.path.isfile(path):
                try:
                    with open(path) as f:
                        found.append((name, scale, json.load(f)))
                except (OSError, json.JSONDecodeError) as e:
                    print(f"warning: {path} cannot be read ({e}); its study is left out", file=sys.stderr)
    return found


def load(folder, plan):
    """{label: record} of the plan's runs that are recorded, and the names of those that are not."""
    records, missing = {}, []
    for name in plan["runs"]:
        path = os.path.join(folder, name)
        try:
            record = read_record(path)
            records[record["label"]] = record
        except DamagedRecord as e:
            if os.path.exists(path):
                print(f"warning: {path} {e}; left out", file=sys.stderr)
            missing.append(name)
    return records, missing


def distinct(values):
    counts = {}
    for v in values:
        counts[v] = counts.get(v, 0) + 1
    return ", ".join(v if len(counts) == 1 else f"{v} ({n} runs)" for v, n in counts.items())


def provenance(records):
    """The lines that say when, where and from which code a section's runs come."""
    runs = list(records.values())
    dates = sorted(r["date"][:10] for r in runs)
    machines = distinct(f"{m['cpu']}, {m['cores']} cores, {'native' if m['bf16_native'] else 'no native'} bf16, "
                        f"{m['gpu'] or 'no GPU'}" for m in (r["machine"] for r in runs))
    commits = distinct((r["commit"] or "no git")[:7] + (" with uncommitted changes" if r["dirty"] else "")
                       for r in runs)
    wall = sum(r.get("wall_s") or 0 for r in runs)
    lines = [f"Runs made {dates[0]}{'' if dates[0] == dates[-1] else ' to ' + dates[-1]} on {machines}; torch "
             f"{distinct(r['torch'] for r in runs)}; commit {commits}; {wall / 60:.1f} min of runs."]
    for commit in dict.fromkeys(r["commit"] for r in runs):
        changed = changed_since(commit)
        if changed is None:
            lines.append(f"Commit {(commit or 'none')[:7]} is not in this checkout: whether mingpt/ has changed since "
                         f"cannot be told.")
        elif changed:
            shown = ", ".join(changed[:4]) + (f" and {len(changed) - 4} more" if len(changed) > 4 else "")
            lines.append(f"**Made before a change to the code its numbers depend on**: mingpt/ differs from commit "
                         f"{commit[:7]} in {len(changed)} files ({shown}).")
    return lines


def save_png(figure, path):
    """A figure as a PNG of 256 colours (the committed plots stay small and look the same); the same figure gives
    the same bytes."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, metadata={"Software": None})
    image = Image.open(buffer).convert("RGB").quantize(256)
    with atomic_open(path, "wb") as f:
        image.save(f, format="png", optimize=True)


def build(results, report_path):
    """The report's markdown and the README summary's lines; writes the figures beside the report."""
    figures_dir = os.path.join(os.path.dirname(os.path.abspath(report_path)), "report")
    found = studies(results)
    if not found:
        fail(f"no study records in {results}: run scripts/study_*.py first (they write results/<study>/<scale>/)")
    commit = git("rev-parse", "--short", "HEAD") or "no git"
    out = ["# Experiment report", "",
           f"Built by `python scripts/report.py` from the records in `{results}/` at commit {commit}: every number, "
           "table and figure below comes from a run's record (`<study>/<scale>/*.json`), so any checkout rebuilds "
           "this file. Each section names its scale: `quick` is a smoke test, `cpu` the course's protocol shrunk "
           "for a 2-core machine (see its note), `full` the course's settings. How to run and resume the studies: "
           "[docs/studies.md](docs/studies.md).", ""]
    summary = []
    for name, scale, plan in found:
        folder = os.path.join(results, name, scale)
        records, missing = load(folder, plan)
        out += [f"## {name} ({scale} scale)", "", f"Scale: {plan['scale_note']}.", ""]
        if missing:
            out += [f"Incomplete: {len(plan['runs']) - len(missing)} of {len(plan['runs'])} runs recorded; go on "
                    f"with `{plan['command']}`.", ""]
            continue
        out += [" ".join(provenance(records)), ""]
        built = section(name, scale, records)
        out += [markdown_table(rows) + "\n" for table, rows in built.tables.items() if table != "curves"]
        for figure_name, figure in built.figures.items():
            target = f"{name}_{scale}_{figure_name}.png"
            save_png(figure, os.path.join(figures_dir, target))
            out += [f"![{name}: {figure_name} ({scale} scale)](report/{target})", ""]
        if built.samples:
            out += ["Samples:", "", samples_table(built.samples), ""]
        out += ["Commands:", "", "```", plan["command"], *(r["command"] for r in records.values()
                                                          if r["kind"] == "run"), "```", ""]
        first = min(r["date"][:10] for r in records.values())
        machine = next(iter(records.values()))["machine"]["cpu"]
        if built.headline:
            summary.append(f"- **{name}** ({scale} scale; {first}, {machine}): {built.headline}.")
    return "\n".join(out), summary


def summary_parts(readme):
    """README.md's text before and after its study summary; UserError where it has no summary to replace."""
    with open(readme) as f:
        text = f.read()
    if SUMMARY_START not in text or SUMMARY_END not in text:
        raise UserError(f"{readme} has no study summary to replace: put the lines {SUMMARY_START} and "
                        f"{SUMMARY_END} where it goes")
    head, rest = text.split(SUMMARY_START, 1)
    return head, rest.split(SUMMARY_END, 1)[1]


def summary_text(summary, results):
    lines = [f"From the records in `{results}/` (every number in [REPORT.md](REPORT.md); "
             f"`python scripts/report.py` rebuilds both):", "", *summary]
    return SUMMARY_START + "\n" + "\n".join(lines) + "\n" + SUMMARY_END


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.error = fail
    parser.add_argument("--results", default="results", help="the records' folder (default: results)")
    parser.add_argument("--report", default="REPORT.md", help="the markdown file to write; its figures go to a "
                                                               "report/ folder beside it (default: REPORT.md)")
    args = parser.parse_args(argv)
    if not os.path.isdir(args.results):
        fail(f"--results={args.results} is not a folder of study records; give the folder the studies' --results "
             f"wrote (default: results)")
    readme = os.path.join(os.path.dirname(os.path.abspath(args.report)), "README.md")
    try:
        check_writable_folder(os.path.dirname(os.path.abspath(args.report)), "--report")
        parts = summary_parts(readme) if os.path.exists(readme) else None  # checked before anything is written
        markdown, summary = build(args.results, args.report)
        save_text(markdown, args.report)
        if parts:
            save_text(parts[0] + summary_text(summary, args.results) + parts[1], readme)
    except UserError as e:
        fail(e)
    print(f"wrote {args.report} from {args.results}" + (f" and the study summary of {readme}" if parts else ""))

if __name__ == "__main__":
    main()
