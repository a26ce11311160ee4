"""
The application: what `python chargpt.py` runs, on the library (mingpt/*.py) and the data layer (mingpt/data/).
A run's settings and flags (settings.py), the run itself and what it prints (run.py, console.py), its files,
checkpoints and resume (files.py, checkpoint.py, resume.py), samples of a run and the sample command
(sample_text.py), what it measures and where it goes (metrics.py, probes.py, dashboard.py, attention_maps.py),
--model.init_from (fine_tune.py) and a run's folder for transformers (export.py).
"""
