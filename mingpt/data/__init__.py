"""
The data layer: a corpus (corpus.py) cut into tokens by a tokenizer (tokenizer.py), tokenized once into the token
cache (encode.py, cache_build.py, cache_entry.py, token_cache.py) that every run memory-maps, and the dataset whose
batches the trainer draws (dataset.py).
"""
