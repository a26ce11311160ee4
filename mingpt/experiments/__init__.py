"""
The experiments, which only scripts/ and the notebook import: the benchmarks' measurements (bench.py), the peers'
checkouts they run beside ours (peers.py), the speedrun's measures (speedrun.py), the studies, their records and
the report's sections (study.py, records.py, study_report.py), and the figures (plots.py).
"""
