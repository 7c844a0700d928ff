"""Data: token corpora and the grain input pipeline.

Usage::

  from muonjax import data
  corpus = data.load_corpus()            # embedded Python-stdlib corpus, byte tokens
  train, val = data.split(corpus.tokens, val_fraction=0.1)
  stream = data.BatchStream(train, batch_size=8, seq_len=32, seed=0)
  batch = next(stream)                   # dict(inputs=(8, 32) int32, targets=(8, 32) int32)
  state = stream.get_state()             # JSON-serialisable; stream.set_state(state) resumes
  val_batches = data.eval_batches(val, batch_size=8, seq_len=32, n_batches=4)
"""

from muonjax.data.corpus import (
    BYTE_VOCAB_SIZE,
    GPT2_VOCAB_SIZE,
    SHARD_MAGIC,
    SHARD_VERSION,
    STDLIB_MAX_BYTES,
    TEXT_SUFFIXES,
    Corpus,
    ShardedTokens,
    load_corpus,
    stdlib_files,
    write_shard,
)
from muonjax.data.pipeline import BatchStream, eval_batches, split
from muonjax.data.references import reference_losses

__all__ = [
    "reference_losses",
    "BYTE_VOCAB_SIZE",
    "BatchStream",
    "Corpus",
    "GPT2_VOCAB_SIZE",
    "SHARD_MAGIC",
    "SHARD_VERSION",
    "STDLIB_MAX_BYTES",
    "ShardedTokens",
    "TEXT_SUFFIXES",
    "eval_batches",
    "load_corpus",
    "split",
    "stdlib_files",
    "write_shard",
]
