"""
Gather every study in out/experiments/ into one markdown report: for each, its scale, the machine and torch
version, the table of final numbers, its plots (copied to a report/ folder beside the markdown) and the exact
commands.

    python scripts/report.py [--experiments out/experiments [out/experiments_full ...]]    # out/REPORT.md
    python scripts/report.py --experiments out/experiments out/experiments_full --report REPORT.md

By default it writes out/REPORT.md and its plots to out/report/ (the same layout as the committed files, so
`diff out/REPORT.md REPORT.md` compares them). The committed REPORT.md and report/ are overwritten only when
asked for with --report REPORT.md. Several folders (one per scale, say, from the studies' --out) give each study
a section per folder.
"""

import argparse
import csv
import json
import os

from PIL import Image

from mingpt.lab.errors import fail
from mingpt.lab.files import save_text

TABLES = ("final.csv", "cost.csv", "length.csv", "checks.csv")


def cell(text):
    """Floats to 4 significant digits; integers and words as they are (with | escaped for markdown)."""
    try:
        int(text)
        return text
    except ValueError:
        pass
    try:
        return f"{float(text):.4g}"
    except ValueError:
        return text.replace("|", "\\|")


def markdown_table(path):
    with open(path) as f:
        rows = list(csv.reader(f))
    fmt = [[cell(c) for c in row] for row in rows[1:]]
    lines = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
    lines += ["| " + " | ".join(row) + " |" for row in fmt]
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--experiments", nargs="+", default=["out/experiments"])
    parser.add_argument("--report", default=os.path.join("out", "REPORT.md"),
                        help="the markdown file to write; its plots go to a report/ folder beside it "
                             "(default: out/REPORT.md; --report REPORT.md overwrites the committed report)")
    args = parser.parse_args(argv)
    report_dir = os.path.dirname(os.path.abspath(args.report))
    figures = os.path.join(report_dir, "report")
    os.makedirs(figures, exist_ok=True)
    folders = [os.path.join(root, d) for root in args.experiments if os.path.isdir(root)
               for d in os.listdir(root) if os.path.isfile(os.path.join(root, d, "study.json"))]
    if not folders:
        fail(f"no studies in {' '.join(args.experiments)}: run scripts/study_*.py first")
    out = ["# Experiment report", "",
           f"Built by `python scripts/report.py` from {len(folders)} study runs in "
           f"{', '.join(f'`{root}`' for root in args.experiments)}. Each section names its scale: `quick` is a "
           "smoke test, `cpu` the course's protocol shrunk for a 2-core machine (see its note), `full` the "
           "course's settings.", ""]
    for folder in sorted(folders, key=lambda f: (os.path.basename(f), f)):
        name = os.path.basename(folder)
        with open(os.path.join(folder, "study.json")) as f:
            info = json.load(f)
        out += [f"## {name} ({info['scale']} scale)", "",
                f"Scale: {info['scale_note']}. Machine: {info['machine']}. Run on {info['date']} in "
                f"{info['seconds']:.0f} s.", ""]
        for table in TABLES:
            if os.path.exists(os.path.join(folder, table)):
                out += [markdown_table(os.path.join(folder, table)), ""]
        for png in sorted(f for f in os.listdir(folder) if f.endswith(".png")):
            target = f"{name}_{info['scale']}_{png}"
            # a 256-colour palette keeps the committed plots small and looks the same
            Image.open(os.path.join(folder, png)).convert("RGB").quantize(256).save(os.path.join(figures, target),
                                                                                 optimize=True)
            out += [f"![{name}: {png[:-4]} ({info['scale']} scale)](report/{target})", ""]
        if os.path.exists(os.path.join(folder, "samples.md")):
            with open(os.path.join(folder, "samples.md")) as f:
                out += ["Samples:", "", f.read(), ""]
        with open(os.path.join(folder, "commands.txt")) as f:
            out += ["Commands:", "", "```", f.read().rstrip(), "```", ""]
    save_text("\n".join(out), args.report)
    print(f"wrote {args.report} ({len(folders)} study runs)")


if __name__ == "__main__":
    main()
