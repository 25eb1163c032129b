"""Data: special tokens, tokenizers and task datasets."""
