"""
The lab around minGPT: a run's settings and flags (settings.py, model_settings.py, errors.py), the run itself and
its files (run.py, files.py, checkpoint.py, resume.py, sampling.py), what it measures and where it goes
(metrics.py, measure.py, dashboard.py), torchrun (distributed.py), Hugging Face in and out (pretrained.py,
export.py), and the benchmarks and studies that scripts/ run (bench.py, study.py).
"""
