"""Reference losses: what a model that learned only token frequencies (or token pairs) reaches.

A training curve means little without them. On byte-level text a model stuck
at the unigram cross-entropy has learned the byte frequencies and nothing
else; one near the bigram cross-entropy has learned which byte follows which.
Both are measured on the same evaluation targets as the runs
(:func:`muonjax.data.eval_batches`), with the statistics counted on the
training split:

* unigram: ``p(y) = (c(y) + 1) / (N + V)`` (add-one smoothing);
* bigram: ``p(y | x) = (c(x, y) + m·p(y)) / (c(x) + m)``, the bigram counts
  smoothed towards the unigram with ``m = PRIOR_TOKENS`` pseudo-tokens
  (Dirichlet / MacKay–Peto smoothing), where ``x`` is the token before ``y``
  (the input token at the target's position).
"""

from __future__ import annotations

import numpy as np

PRIOR_TOKENS = 10.0


def reference_losses(train_tokens, inputs, targets, vocab_size: int) -> dict:
  """Unigram and bigram cross-entropy (nats per token) of ``targets``.

  Args:
    train_tokens: 1-D training tokens the statistics are counted on.
    inputs: evaluation inputs, any shape; ``inputs[..., t]`` is the token
      before ``targets[..., t]``.
    targets: evaluation targets, the shape of ``inputs``.
    vocab_size: ``V``; every token must be in ``[0, V)``.

  Returns:
    ``{"unigram", "bigram", "tokens"}`` (``tokens``: how many targets).

  Raises:
    ValueError: shapes differ, no targets, or a token outside the vocabulary.
  """
  train = np.asarray(train_tokens).reshape(-1).astype(np.int64)
  x = np.asarray(inputs).reshape(-1).astype(np.int64)
  y = np.asarray(targets).reshape(-1).astype(np.int64)
  if np.shape(inputs) != np.shape(targets):
    raise ValueError(f"inputs and targets must have one shape; got {np.shape(inputs)} "
                     f"and {np.shape(targets)}")
  if y.size == 0 or train.size < 2:
    raise ValueError("reference_losses needs evaluation targets and at least 2 training tokens")
  for name, t in (("train_tokens", train), ("inputs", x), ("targets", y)):
    if t.min() < 0 or t.max() >= vocab_size:
      raise ValueError(f"{name} has a token outside [0, {vocab_size})")
  unigram = (np.bincount(train, minlength=vocab_size) + 1.0) / (train.size + vocab_size)
  # Pair counts kept sparse (a 50k vocabulary has 2.5e9 possible pairs).
  codes, counts = np.unique(train[:-1] * vocab_size + train[1:], return_counts=True)
  wanted = x * vocab_size + y
  at = np.clip(np.searchsorted(codes, wanted), 0, codes.size - 1)
  pair_count = np.where(codes[at] == wanted, counts[at], 0).astype(np.float64)
  context = np.bincount(train[:-1], minlength=vocab_size).astype(np.float64)
  p_bigram = (pair_count + PRIOR_TOKENS * unigram[y]) / (context[x] + PRIOR_TOKENS)
  return {"unigram": float(-np.mean(np.log(unigram[y]))),
          "bigram": float(-np.mean(np.log(p_bigram))),
          "tokens": int(y.size)}
