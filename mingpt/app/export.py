"""
A trained run out of the project: `export(run_dir, out_dir)` writes a folder that Hugging Face `transformers`
loads with AutoModelForCausalLM.from_pretrained(out_dir) and AutoTokenizer.from_pretrained(out_dir):

  config.json, generation_config.json   a GPT2Config for GPT-2's own model (minGPT's: LayerNorm, GELU, biases,
                                        a learned position table, multi-head attention, no window; a
                                        --model.init_from fine-tune), else a LlamaConfig, or a MistralConfig with
                                        its sliding_window for a model with --model.window
  model.safetensors                     the weights under GPT-2's or Llama's names, fp32
  tokenizer.json, tokenizer_config.json the run's tokenizer as a `tokenizers` JSON

Only a model that GPT-2, Llama or Mistral computes exactly is written (GPT-2's block, or --model.preset=llama with
any n_kv_head and window; a tied head is their tie_word_embeddings, a zero-initialised projection only an init): a
norm, MLP, bias or position table they lack, QK-norm, logit soft-capping, the writeup's group_sum scores or a
recurrent model is refused with one line naming the flags to change.

The conversion of the settings and weights is mingpt/hf.py's; here the run's folder is read and the tokenizer
converted.
"""

import os

from mingpt.app.checkpoint import load_checkpoint, load_state_into, saved_model_config, saved_tokenizer
from mingpt.app.files import check_writable_folder
from mingpt.data.tokenizer import UNK
from mingpt.errors import UserError
from mingpt.hf import check_exportable, gpt2_config, gpt2_state_dict, hf_config, hf_state_dict, not_gpt2
from mingpt.model import GPT


# WORD_PIECES for the Oniguruma regexes of `tokenizers`, where \w also takes combining marks and \s leaves out the
# separators \x1c-\x1f that Python counts as whitespace: Python's classes written out, which cut every character
# that Python's Unicode database assigns as WORD_PIECES does
WORD_PIECES_ONIGURUMA = r"[\p{L}\p{N}_]+|[^\p{L}\p{N}_\s\x1c-\x1f]|[\s\x1c-\x1f]+"


def hf_tokenizer(tokenizer, block_size):
    """The run's tokenizer as a transformers tokenizer over a `tokenizers` Tokenizer: a BPE run's own; for char and
    word, their token list as a WordLevel vocabulary behind a pre-tokenizer that cuts text where ours does (every
    character; WORD_PIECES) and a decoder that concatenates tokens, as ours decode."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast
    if tokenizer.kind in ("bpe", "gpt2"):
        tok = Tokenizer.from_str(tokenizer.hf.to_str())
    else:
        vocab = {token: i for i, token in enumerate(tokenizer.tokens)}
        # a character outside a char vocabulary is an error for ours, and for WordLevel without its unk token
        tok = Tokenizer(models.WordLevel(vocab, unk_token=UNK if tokenizer.kind == "word" else None))
        pattern = r"[\s\S]" if tokenizer.kind == "char" else WORD_PIECES_ONIGURUMA
        tok.pre_tokenizer = pre_tokenizers.Split(Regex(pattern), behavior="isolated")
        tok.decoder = decoders.Fuse()
    # transformers' clean-up would remove the space before punctuation that the text has
    return PreTrainedTokenizerFast(tokenizer_object=tok, clean_up_tokenization_spaces=False,
                                   model_max_length=block_size)


def export(run_dir, out_dir):
    """Write run_dir's model.pt to out_dir for transformers; returns the Hugging Face model written. Every problem
    (no run, a model they cannot express, an unwritable, non-empty or the run's own folder) is a UserError, raised
    before anything is written."""
    path = os.path.join(run_dir, "model.pt")
    ckpt = load_checkpoint(path, "model.pt", hint=" (RUN_DIR names a trained run's folder)")
    config = saved_model_config(ckpt, path)
    check_exportable(config, path)
    if os.path.abspath(out_dir) == os.path.abspath(run_dir):
        raise UserError(f"{out_dir} is the run's own folder, whose config.json and tokenizer.json the export would "
                        f"overwrite; export into another folder")
    check_writable_folder(out_dir, "OUT_DIR")
    try:
        held = sorted(os.listdir(out_dir)) if os.path.isdir(out_dir) else []
    except OSError as e:
        raise UserError(f"OUT_DIR={out_dir} cannot be listed ({e.strerror}); export into a new or empty "
                        f"folder") from None
    if held:  # whatever it holds (another model's config.json, a run) would be replaced or mixed with the export
        raise UserError(f"OUT_DIR={out_dir} already holds {', '.join(held[:3])}{' and more' if len(held) > 3 else ''}; "
                        f"export into a new or empty folder")
    try:
        from transformers import AutoModelForCausalLM
    except ImportError:
        raise UserError("exporting needs transformers: pip install -r requirements.txt") from None
    model = GPT(config)
    load_state_into(model, ckpt["model"], path)
    if not not_gpt2(config):
        hf = AutoModelForCausalLM.from_config(gpt2_config(config))
        hf.load_state_dict(gpt2_state_dict(model.state_dict()), strict=True)
    else:
        hf = AutoModelForCausalLM.from_config(hf_config(config, model.attention_modules()[0].query_rotary_pe.base))
        hf.load_state_dict(hf_state_dict(model.state_dict()), strict=True)
    hf.save_pretrained(out_dir)
    hf_tokenizer(saved_tokenizer(ckpt, path), config.block_size).save_pretrained(out_dir)
    return hf
