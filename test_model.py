"""
The test suite's runner: `python test_model.py` runs every test in tests/ with pytest and prints its summary line;
its arguments go to pytest, so `python test_model.py -m "not slow"` is the fast subset (no real corpus, no
studies, no training through chargpt.py subprocesses) and `python test_model.py -k rope` picks tests by name.
`pytest` from the repository root runs the same tests (pyproject.toml configures it).

The tests, by subject (each checks behaviour against something independent of the code under test: the
writeup's formulas, a naive loop, or torch's own modules):

    tests/test_flags.py       flag values, errors and checks, --help
    tests/test_data.py        the corpus, vocabulary, split and batches
    tests/test_training.py    training, run files, checkpoints, exact resume, context extension, atomic writes
    tests/test_positions.py   RoPE, sinusoidal and learned position tables
    tests/test_attention.py   grouped-query and sliding-window attention, causality, dropout, probes
    tests/test_llama.py       RMSNorm, SwiGLU, no biases and --model.preset=llama
    tests/test_export.py      the export to Hugging Face transformers against its Llama / Mistral
    tests/test_generation.py  the KV cache, generation past block_size, top-k / top-p sampling
    tests/test_rnn.py         the Elman RNN and the bidirectional RNN language models
    tests/test_cli.py         chargpt.py end to end on the real corpus (slow), the sample command
    tests/test_studies.py     every study at its quick scale and the report built from them (slow)
    tests/helpers.py, tests/conftest.py   the helpers and fixtures they share
"""

import os
import sys

import pytest

if __name__ == "__main__":
    sys.exit(pytest.main([os.path.join(os.path.dirname(os.path.abspath(__file__)), "tests"), "-q", *sys.argv[1:]]))
