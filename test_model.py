"""
The test suite's runner: `python test_model.py` runs every test in tests/ with pytest and prints its summary line;
its arguments go to pytest, so `python test_model.py -m "not slow"` is the fast subset (no real corpus, no
studies, no training through chargpt.py subprocesses) and `python test_model.py -k rope` picks tests by name.
`pytest` from the repository root runs the same tests (pyproject.toml configures it).

The tests, by subject (each checks behaviour against something independent of the code under test: the
writeup's formulas, a naive loop, or torch's own modules):

    tests/test_flags.py         flag values, errors and checks, rules that apply to the model type, --help
    tests/test_settings.py      every setting's declared type and range: one line per bad value, before any write
    tests/test_data.py          the corpus, vocabulary, split and batches
    tests/test_tokenizers.py    char, word and BPE tokenizers: round trips, bits per character, their checkpoints
    tests/test_token_cache.py   the token cache and the corpus: ids against the whole text, folders, rebuilds
    tests/test_training.py      training, run files, checkpoints, exact resume, context extension, atomic writes
    tests/test_checkpoints.py   malformed checkpoints and refused writes: one line, the previous files intact
    tests/test_lifecycle.py     Ctrl-C, resuming with a changed schedule, repaired logs, the sample command
    tests/test_distributed.py   data-parallel training under torchrun (gloo) against one process, every model type
    tests/test_wandb.py         what a run sends to wandb, read back from its offline records
    tests/test_positions.py     RoPE, sinusoidal and learned position tables
    tests/test_attention.py     grouped-query and sliding-window attention, causality, dropout, probes
    tests/test_attention_maps.py  attention maps against a softmax of q and k, the script, the maps on wandb
    tests/test_llama.py         RMSNorm, SwiGLU, no biases and --model.preset=llama
    tests/test_export.py        the export to Hugging Face transformers against its Llama / Mistral
    tests/test_pretrained.py    GPT-2, Llama and Mistral folders loaded into our GPT, against transformers' logits
    tests/test_bpe.py           minGPT's GPT-2 BPE (mingpt/bpe.py) against transformers' and tokenizers' ids
    tests/test_numerics.py      the gradient norm, divergence (exit 3, nothing lost, torchrun), float16 and its scaler,
                                auto_dtype
    tests/test_mingpt_api.py    minGPT's API: presets, n_head, the Trainer on a Dataset, callbacks, set_seed, CfgNode
    tests/test_finetune.py      --model.init_from (fine-tuning GPT-2), --data.tokenizer=gpt2, GPT.from_pretrained
    tests/test_dropout.py       the cheap CPU dropout mask against torch's nn.Dropout
    tests/test_generation.py    the KV cache, generation past block_size, top-k / top-p sampling
    tests/test_rnn.py           the Elman RNN and the bidirectional RNN language models
    tests/test_cli.py           chargpt.py end to end on the real corpus (slow), the sample command, check_gpu.py
    tests/test_modern.py        the speedrun's flags (Muon, QK-norm, ReLU^2, zero-init, tying, soft-cap, wsd, compile,
                                the target) against their formulas, recipes, their bad input
    tests/test_speedrun.py      scripts/speedrun.py and scripts/study_modern.py at a tiny scale, the full-pass loss
    tests/test_bench.py         the benchmark scripts on a tiny model, their bad options (slow)
    tests/test_studies.py       every study at its quick scale and the report built from their records (slow)
    tests/test_records.py       the studies' run records, a study started again (finished, killed, out of --max-minutes),
                                damaged records, the report from the records alone
    tests/test_notebook.py      notebooks/lab.ipynb run top to bottom in a Jupyter kernel at its quick scale (slow)
    tests/helpers.py, tests/conftest.py     the helpers and fixtures they share
"""

import os
import sys

import pytest

if __name__ == "__main__":
    sys.exit(pytest.main([os.path.join(os.path.dirname(os.path.abspath(__file__)), "tests"), "-q", *sys.argv[1:]]))
