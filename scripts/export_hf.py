"""
Export a trained run to Hugging Face transformers (mingpt/app/export.py): RUN_DIR's model.pt becomes OUT_DIR with a
Llama (or, with --model.window, a Mistral) config.json, model.safetensors and the run's tokenizer.

    python chargpt.py --model.preset=llama --system.work_dir=out/llama
    python scripts/export_hf.py out/llama out/llama_hf
    python -c "from transformers import pipeline; g = pipeline('text-generation', 'out/llama_hf'); \
               print(g('ROMEO:', max_new_tokens=500, do_sample=True, top_k=10)[0]['generated_text'])"

A model Llama and Mistral cannot express (layernorm, gelu, biases, a position table, group_sum scores, an RNN)
is refused with one line naming the flags to train with, exit status 2.
"""

import argparse

from mingpt.app.export import export
from mingpt.errors import fail
from mingpt.errors import UserError


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.error = fail  # a missing or malformed argument is one line, exit 2, as every bad input
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a trained run's folder (its --system.work_dir)")
    parser.add_argument("out_dir", metavar="OUT_DIR", help="the folder to write for transformers")
    args = parser.parse_args()
    try:
        hf = export(args.run_dir, args.out_dir)
    except UserError as e:
        fail(e)
    print(f"wrote {args.out_dir}: {type(hf).__name__}, {hf.num_parameters() / 1e6:.2f}M parameters; load it with "
          f"AutoModelForCausalLM.from_pretrained and AutoTokenizer.from_pretrained")


if __name__ == "__main__":
    main()
