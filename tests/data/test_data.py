"""Tests for muonjax.data: corpora (stdlib, text, .bin shards), split, BatchStream, eval_batches."""

import hashlib
import json
import platform
import time

import numpy as np
import pytest

from muonjax import data
from muonjax.data import corpus as corpus_lib


def _hand_written_shard(path, tokens, header=True):
  """Writes a shard without muonjax's writer: llm.c layout, 256 int32 then uint16."""
  tokens = np.asarray(tokens, np.uint16)
  with open(path, "wb") as f:
    if header:
      head = np.zeros(256, np.int32)
      head[0], head[1], head[2] = 20240520, 1, tokens.size
      f.write(head.tobytes())
    f.write(tokens.tobytes())


def _one_line_naming(excinfo, *names):
  msg = str(excinfo.value)
  assert "\n" not in msg
  for name in names:
    assert str(name) in msg, (name, msg)


def _take(stream, n):
  return [next(stream) for _ in range(n)]


def _assert_same_batches(xs, ys):
  assert len(xs) == len(ys)
  for x, y in zip(xs, ys):
    np.testing.assert_array_equal(x["inputs"], y["inputs"])
    np.testing.assert_array_equal(x["targets"], y["targets"])


def _first_tokens(batches):
  return np.concatenate([b["inputs"][:, 0] for b in batches])


# ---------------------------------------------------------------------------
# Embedded stdlib corpus


def test_stdlib_corpus_info_and_tokens():
  c = data.load_corpus()
  info = c.info
  assert json.loads(json.dumps(info)) == info
  assert info["kind"] == "stdlib" and info["source"] == "stdlib"
  assert info["python_version"] == platform.python_version()
  assert info["files"] > 50
  assert info["n_tokens"] == c.tokens.size == min(data.STDLIB_MAX_BYTES, info["n_tokens"])
  assert info["sha256"] == hashlib.sha256(c.tokens.tobytes()).hexdigest()
  assert c.vocab_size == info["vocab_size"] == 256
  assert c.tokens.dtype == np.uint8 and c.tokens.ndim == 1
  assert not c.tokens.flags.writeable  # shared from the per-process cache
  text = c.tokens[:2000].tobytes().decode("utf-8")
  assert text.startswith(f"# ==== {data.stdlib_files()[0]} ====\n")


def test_stdlib_files_exclude_tests_and_site_packages():
  rels = data.stdlib_files()
  assert rels == sorted(rels, key=lambda r: tuple(r.split("/")))
  assert all(r.endswith(".py") for r in rels)
  for r in rels:
    parts = set(r.split("/")[:-1])
    assert not parts & {"test", "tests", "idle_test", "site-packages", "dist-packages"}, r
  assert "os.py" in rels and "json/__init__.py" in rels


def test_stdlib_read_is_fast_and_cached():
  corpus_lib._stdlib_tokens.cache_clear()
  start = time.perf_counter()
  a = data.load_corpus()
  cold = time.perf_counter() - start
  start = time.perf_counter()
  b = data.load_corpus(None)
  warm = time.perf_counter() - start
  assert cold < 2.0, cold
  assert warm < 0.05, warm
  assert b.tokens is a.tokens and b.info == a.info


def test_stdlib_max_bytes_is_a_prefix():
  full = data.load_corpus()
  small = data.load_corpus("stdlib", max_bytes=1000)
  assert small.info["n_tokens"] == 1000 and small.info["truncated"]
  np.testing.assert_array_equal(small.tokens, full.tokens[:1000])
  assert small.info["sha256"] != full.info["sha256"]


# ---------------------------------------------------------------------------
# User text


def test_text_file_is_its_bytes(tmp_path):
  p = tmp_path / "notes.rst"
  p.write_bytes(b"hello \xff world\n")
  c = data.load_corpus(p)
  assert c.tokens.tobytes() == b"hello \xff world\n"
  assert c.info["kind"] == "text" and c.info["files"] == 1 and c.info["source"] == str(p)
  assert c.info["sha256"] == hashlib.sha256(b"hello \xff world\n").hexdigest()
  assert data.load_corpus(str(p), max_bytes=5).tokens.tobytes() == b"hello"


def test_text_folder_reads_txt_md_py_sorted(tmp_path):
  (tmp_path / "sub").mkdir()
  (tmp_path / ".hidden").mkdir()
  (tmp_path / "b.txt").write_text("B")
  (tmp_path / "a.py").write_text("A\n")
  (tmp_path / "sub" / "c.md").write_text("C")
  (tmp_path / "skip.json").write_text("{}")
  (tmp_path / ".skip.txt").write_text("no")
  (tmp_path / ".hidden" / "x.txt").write_text("no")
  c = data.load_corpus(tmp_path)
  assert c.info["files"] == 3
  assert c.tokens.tobytes() == (b"# ==== a.py ====\nA\n\n# ==== b.txt ====\nB\n\n"
                                b"# ==== sub/c.md ====\nC\n\n")
  g = data.load_corpus(str(tmp_path / "*.txt"))
  assert g.info["kind"] == "text" and g.tokens.tobytes() == b"# ==== b.txt ====\nB\n\n"


# ---------------------------------------------------------------------------
# .bin shards


@pytest.mark.parametrize("header", [True, False])
def test_shard_is_memory_mapped(tmp_path, header):
  tokens = np.arange(1000, dtype=np.uint16) * 50
  p = tmp_path / "fineweb_train_000001.bin"
  _hand_written_shard(p, tokens, header=header)
  c = data.load_corpus(p)
  assert isinstance(c.tokens, np.memmap)
  assert c.tokens.dtype == np.uint16
  np.testing.assert_array_equal(c.tokens, tokens)
  assert c.vocab_size == 50257
  assert c.info["kind"] == "shards" and c.info["files"] == 1
  assert c.info["shard_format"] == ("header" if header else "headerless")
  assert c.info["sha256"] == hashlib.sha256(tokens.astype("<u2").tobytes()).hexdigest()
  assert json.loads(json.dumps(c.info)) == c.info


def test_write_shard_matches_the_llmc_layout(tmp_path):
  tokens = np.array([5, 50256, 7], np.int64)
  data.write_shard(tmp_path / "a.bin", tokens)
  _hand_written_shard(tmp_path / "b.bin", tokens)
  assert (tmp_path / "a.bin").read_bytes() == (tmp_path / "b.bin").read_bytes()
  data.write_shard(tmp_path / "c.bin", tokens, header=False)
  assert (tmp_path / "c.bin").read_bytes() == tokens.astype("<u2").tobytes()


def test_several_shards_give_a_lazy_concatenation(tmp_path):
  rng = np.random.default_rng(0)
  parts = [rng.integers(0, 50257, n).astype(np.uint16) for n in (300, 41, 500)]
  for i, p in enumerate(parts):
    _hand_written_shard(tmp_path / f"shard_{i}.bin", p, header=i != 1)
  (tmp_path / "README.md").write_text("ignored next to shards")
  whole = np.concatenate(parts)
  c = data.load_corpus(tmp_path)
  assert isinstance(c.tokens, data.ShardedTokens)
  assert c.info["files"] == 3 and c.info["shard_format"] == "mixed"
  assert c.info["sha256"] == hashlib.sha256(whole.tobytes()).hexdigest()
  assert len(c.tokens) == c.tokens.size == c.info["n_tokens"] == whole.size
  np.testing.assert_array_equal(np.asarray(c.tokens), whole)
  t = c.tokens
  assert t[299] == whole[299] and t[300] == whole[300] and t[-1] == whole[-1]
  view = t[250:400]
  assert isinstance(view, data.ShardedTokens) and len(view) == 150
  np.testing.assert_array_equal(np.asarray(view), whole[250:400])
  np.testing.assert_array_equal(view.read(40, 100), whole[290:350])
  idx = np.array([0, 299, 300, 340, 341, 840, -1])
  np.testing.assert_array_equal(t[idx], whole[idx])
  g = data.load_corpus(str(tmp_path / "shard_*.bin"))
  assert g.info["sha256"] == c.info["sha256"]

  # The pipeline over the lazy concatenation equals the pipeline over the array.
  train_l, val_l = data.split(c.tokens, 0.2)
  train_a, val_a = data.split(whole, 0.2)
  assert isinstance(train_l, data.ShardedTokens) and len(train_l) == len(train_a)
  _assert_same_batches(_take(data.BatchStream(train_l, batch_size=4, seq_len=16, seed=3), 12),
                       _take(data.BatchStream(train_a, batch_size=4, seq_len=16, seed=3), 12))
  _assert_same_batches(data.eval_batches(val_l, batch_size=2, seq_len=16),
                       data.eval_batches(val_a, batch_size=2, seq_len=16))


def test_shard_errors(tmp_path):
  def bad(name, raw):
    p = tmp_path / name
    p.write_bytes(raw)
    with pytest.raises(ValueError) as e:
      data.load_corpus(p)
    _one_line_naming(e, p)
    return str(e.value)

  head = np.zeros(256, np.int32)
  head[:3] = 20240520, 2, 3
  assert "version 2" in bad("v2.bin", head.tobytes() + b"\0" * 6)
  head[1] = 1
  assert "header says 3 tokens (1030 bytes) but it has 1028 bytes" in bad(
      "short.bin", head.tobytes() + b"\0" * 4)
  head[2] = 0
  assert "empty" in bad("zero.bin", head.tobytes())
  assert "uint16" in bad("odd.bin", b"\1\2\3")
  assert "empty" in bad("empty.bin", b"")
  assert "truncated" in bad("trunc.bin", head.tobytes()[:100])
  p = tmp_path / "big" / "x.bin"
  p.parent.mkdir()
  _hand_written_shard(p, [1, 2, 300])
  with pytest.raises(ValueError, match="vocab_size 256 .* token id 300"):
    data.load_corpus(p, vocab_size=256)
  assert data.load_corpus(p, vocab_size=301).vocab_size == 301


# ---------------------------------------------------------------------------
# Bad input to load_corpus


def test_missing_and_empty_sources(tmp_path):
  with pytest.raises(ValueError, match="does not exist") as e:
    data.load_corpus(tmp_path / "nope")
  _one_line_naming(e, tmp_path / "nope")
  with pytest.raises(ValueError, match="is empty") as e:
    data.load_corpus(tmp_path)
  _one_line_naming(e, tmp_path)
  (tmp_path / "other.json").write_text("{}")
  with pytest.raises(ValueError, match="is empty"):
    data.load_corpus(tmp_path)
  (tmp_path / "e.txt").write_bytes(b"")
  with pytest.raises(ValueError, match="is empty") as e:
    data.load_corpus(tmp_path / "e.txt")
  _one_line_naming(e, tmp_path / "e.txt")
  with pytest.raises(ValueError, match="only empty files") as e:
    data.load_corpus(tmp_path)
  _one_line_naming(e, tmp_path)
  with pytest.raises(ValueError, match="matches no files") as e:
    data.load_corpus(str(tmp_path / "*.bin"))
  _one_line_naming(e, tmp_path / "*.bin")
  (tmp_path / "x.bin").write_bytes(b"\1\0")
  with pytest.raises(ValueError, match="both .bin"):
    data.load_corpus(str(tmp_path / "*"))


@pytest.mark.parametrize("kwargs, field", [
    (dict(max_bytes=0), "max_bytes"), (dict(max_bytes=1.5), "max_bytes"),
    (dict(vocab_size=-1), "vocab_size"), (dict(vocab_size=100), "vocab_size"),
])
def test_load_corpus_bad_arguments(kwargs, field):
  with pytest.raises(ValueError, match=field):
    data.load_corpus(**kwargs)


def test_load_corpus_bad_source():
  with pytest.raises(ValueError, match="data source"):
    data.load_corpus(42)


# ---------------------------------------------------------------------------
# split, BatchStream, eval_batches


def _arange_tokens(n):
  return np.arange(n, dtype=np.int32)


def test_split_is_the_last_fraction():
  t = _arange_tokens(1000)
  train, val = data.split(t, val_fraction=0.1)
  np.testing.assert_array_equal(train, t[:900])
  np.testing.assert_array_equal(val, t[900:])
  train0, val0 = data.split(t, 0)
  assert len(train0) == 1000 and len(val0) == 0
  assert len(data.split(t, 0.0015)[1]) == 1
  for bad in (-0.1, 1, 1.5, "0.1", None, True):
    with pytest.raises(ValueError, match="val_fraction"):
      data.split(t, bad)


def test_batches_are_shifted_windows_from_the_train_split():
  t = _arange_tokens(5000)
  train, val = data.split(t, 0.2)
  s = data.BatchStream(train, batch_size=8, seq_len=32, seed=0)
  for b in _take(s, 40):  # > 1 epoch (121 windows)
    x, y = b["inputs"], b["targets"]
    assert x.shape == y.shape == (8, 32) and x.dtype == y.dtype == np.int32
    np.testing.assert_array_equal(y[:, :-1], x[:, 1:])
    np.testing.assert_array_equal(y, x + 1)  # arange tokens: the next token
    assert np.all(x[:, 0] % 33 == 0)  # window starts on the (T + 1) grid
    assert y.max() < len(train)  # no validation token
  for b in data.eval_batches(val, batch_size=8, seq_len=32):
    np.testing.assert_array_equal(b["targets"], b["inputs"] + 1)
    assert b["inputs"].min() >= len(train)


def test_same_seed_same_batches_other_seed_differs():
  t = _arange_tokens(4000)
  a = _take(data.BatchStream(t, batch_size=4, seq_len=16, seed=7), 10)
  b = _take(data.BatchStream(t, batch_size=4, seq_len=16, seed=7), 10)
  c = _take(data.BatchStream(t, batch_size=4, seq_len=16, seed=8), 10)
  _assert_same_batches(a, b)
  assert not np.array_equal(_first_tokens(a), _first_tokens(c))


@pytest.mark.parametrize("n_windows, batch_size", [(12, 4), (10, 4), (7, 7)])
def test_every_window_once_per_epoch_reshuffled(n_windows, batch_size):
  seq_len = 5
  t = _arange_tokens(n_windows * (seq_len + 1) + 3)  # a short tail, never used
  s = data.BatchStream(t, batch_size=batch_size, seq_len=seq_len, seed=1)
  assert s.windows_per_epoch == n_windows
  epochs = 4
  n_batches = -(-epochs * n_windows // batch_size)
  batches = _take(s, n_batches)
  ids = _first_tokens(batches) // (seq_len + 1)
  np.testing.assert_array_equal(ids, np.concatenate([s.window_ids(k) for k in range(n_batches)]))
  orders = [ids[e * n_windows:(e + 1) * n_windows] for e in range(epochs)]
  for order in orders:
    np.testing.assert_array_equal(np.sort(order), np.arange(n_windows))
  assert len({tuple(o) for o in orders}) > 1  # reshuffled per epoch
  assert s.epoch == n_batches * batch_size // n_windows


@pytest.mark.parametrize("consumed", [0, 1, 2, 3, 5])
def test_set_state_resumes_exactly(consumed):
  # 10 windows, batch 4: 2.5 batches per epoch, so the 5 batches cross epochs.
  t = _arange_tokens(10 * 9)
  a = data.BatchStream(t, batch_size=4, seq_len=8, seed=11)
  _take(a, consumed)
  state = json.loads(json.dumps(a.get_state()))
  assert state["step"] == consumed and state["epoch"] == consumed * 4 // 10
  expected = _take(a, 5)
  b = data.BatchStream(t, batch_size=4, seq_len=8, seed=11)
  next(b)  # its own position is overwritten
  b.set_state(state)
  _assert_same_batches(_take(b, 5), expected)
  assert b.get_state() == a.get_state()


def test_set_state_rejects_other_streams():
  t = _arange_tokens(10 * 9)
  state = data.BatchStream(t, batch_size=4, seq_len=8, seed=11).get_state()
  for kwargs, field in ((dict(seed=12), "seed"), (dict(batch_size=2), "batch_size")):
    other = data.BatchStream(t, **{**dict(batch_size=4, seq_len=8, seed=11), **kwargs})
    with pytest.raises(ValueError, match=field):
      other.set_state(state)
  other = data.BatchStream(t[:-9], batch_size=4, seq_len=8, seed=11)
  with pytest.raises(ValueError, match="n_windows"):
    other.set_state(state)
  s = data.BatchStream(t, batch_size=4, seq_len=8, seed=11)
  for bad in (None, {}, dict(state, step=-1), dict(state, step="3"), dict(state, version=9)):
    with pytest.raises(ValueError, match="stream state"):
      s.set_state(bad)


def test_grain_dataset_is_the_stream():
  t = _arange_tokens(3000)
  s = data.BatchStream(t, batch_size=4, seq_len=16, seed=2)
  batches = _take(s, 3)
  _assert_same_batches([s.dataset[k] for k in range(3)], batches)
  assert iter(s) is s


def test_process_slices_make_the_global_batch():
  t = _arange_tokens(3000)
  g = _take(data.BatchStream(t, batch_size=8, seq_len=16, seed=4), 3)
  parts = [_take(data.BatchStream(t, batch_size=8, seq_len=16, seed=4, process_index=i,
                                  process_count=4), 3) for i in range(4)]
  for k in range(3):
    np.testing.assert_array_equal(np.concatenate([p[k]["inputs"] for p in parts]), g[k]["inputs"])
  ge = data.eval_batches(t, batch_size=8, seq_len=16, n_batches=2)
  pe = [data.eval_batches(t, batch_size=8, seq_len=16, n_batches=2, process_index=i,
                          process_count=2) for i in range(2)]
  for k in range(2):
    np.testing.assert_array_equal(np.concatenate([p[k]["targets"] for p in pe]), ge[k]["targets"])
  with pytest.raises(ValueError, match="divisible"):
    data.BatchStream(t, batch_size=6, seq_len=16, process_count=4)
  with pytest.raises(ValueError, match="process_index"):
    data.BatchStream(t, batch_size=8, seq_len=16, process_index=4, process_count=4)


def test_eval_batches_are_deterministic_and_spread():
  t = _arange_tokens(1000)
  a = data.eval_batches(t, batch_size=4, seq_len=9, n_batches=3)
  _assert_same_batches(a, data.eval_batches(t, batch_size=4, seq_len=9, n_batches=3))
  assert len(a) == 3 and a[0]["inputs"].shape == (4, 9)
  starts = _first_tokens(a)
  assert np.all(starts % 10 == 0) and len(set(starts)) == 12  # disjoint, on the grid
  assert starts.max() > 800  # spread over the split, not just its head
  assert len(data.eval_batches(t, batch_size=4, seq_len=9)) == 100 // 4
  # Too small for 16 disjoint windows: overlapping windows, still inside the split.
  small = data.eval_batches(t[:50], batch_size=8, seq_len=9, n_batches=2)
  starts = _first_tokens(small)
  assert len(small) == 2 and starts.min() == 0 and starts.max() == 40
  np.testing.assert_array_equal(small[1]["targets"], small[1]["inputs"] + 1)
  one = data.eval_batches(t[:10], batch_size=2, seq_len=9)
  assert len(one) == 1 and one[0]["inputs"].shape == (2, 9)


def test_corpus_too_small_for_one_batch_or_window():
  t = _arange_tokens(100)
  with pytest.raises(ValueError) as e:
    data.BatchStream(t, batch_size=4, seq_len=32, seed=0)
  _one_line_naming(e, "100 tokens", "batch_size 4", "seq_len 32", 132)
  assert data.BatchStream(t[:99], batch_size=3, seq_len=32).windows_per_epoch == 3
  with pytest.raises(ValueError) as e:
    data.eval_batches(t[:32], batch_size=1, seq_len=32)
  _one_line_naming(e, "32 tokens", 33)
  with pytest.raises(ValueError, match="smaller than one window"):
    data.eval_batches(t[:0], batch_size=1, seq_len=32)


@pytest.mark.parametrize("field, value", [
    ("batch_size", 0), ("batch_size", -2), ("batch_size", 2.0), ("batch_size", True),
    ("seq_len", 0), ("seq_len", "16"), ("seq_len", None), ("seed", -1), ("seed", 1.5),
])
def test_bad_sizes(field, value):
  t = _arange_tokens(1000)
  kwargs = dict(batch_size=2, seq_len=16, seed=0)
  kwargs[field] = value
  with pytest.raises(ValueError, match=field) as e:
    data.BatchStream(t, **kwargs)
  _one_line_naming(e, repr(value))
  if field != "seed":
    kwargs.pop("seed")
    with pytest.raises(ValueError, match=field):
      data.eval_batches(t, **kwargs)


def test_bad_token_arrays():
  with pytest.raises(ValueError, match="1-D"):
    data.BatchStream(np.zeros((10, 10), np.int32), batch_size=1, seq_len=4)
  with pytest.raises(ValueError, match="integers"):
    data.BatchStream(np.zeros(100, np.float32), batch_size=1, seq_len=4)
  with pytest.raises(ValueError, match="n_batches"):
    data.eval_batches(_arange_tokens(100), batch_size=1, seq_len=4, n_batches=0)


def test_stdlib_corpus_end_to_end():
  c = data.load_corpus()
  train, val = data.split(c.tokens, val_fraction=0.1)
  s = data.BatchStream(train, batch_size=8, seq_len=32, seed=0)
  b = next(s)
  assert b["inputs"].max() < c.vocab_size
  v = data.eval_batches(val, batch_size=8, seq_len=32, n_batches=2)
  assert len(v) == 2 and v[0]["inputs"].shape == (8, 32)


def test_reference_losses_against_counting_by_hand():
  from muonjax.data import reference_losses

  rng = np.random.default_rng(0)
  train = rng.integers(0, 5, size=400)
  inputs = rng.integers(0, 5, size=(3, 7))
  targets = rng.integers(0, 5, size=(3, 7))
  got = reference_losses(train, inputs, targets, vocab_size=6)
  V, m = 6, 10.0
  uni = np.array([(np.sum(train == v) + 1.0) / (train.size + V) for v in range(V)])
  ce_uni, ce_bi = [], []
  for a, b in zip(inputs.ravel(), targets.ravel()):
    pair = sum(1 for s, t in zip(train[:-1], train[1:]) if s == a and t == b)
    ctx = np.sum(train[:-1] == a)
    ce_uni.append(-np.log(uni[b]))
    ce_bi.append(-np.log((pair + m * uni[b]) / (ctx + m)))
  assert got["tokens"] == 21
  assert got["unigram"] == pytest.approx(np.mean(ce_uni), rel=1e-12)
  assert got["bigram"] == pytest.approx(np.mean(ce_bi), rel=1e-12)


def test_reference_losses_see_structure_and_reject_bad_tokens():
  from muonjax.data import reference_losses

  cycle = np.tile(np.arange(8), 200)  # every token determines the next
  refs = reference_losses(cycle, cycle[:-1][None], cycle[1:][None], vocab_size=8)
  assert refs["unigram"] == pytest.approx(np.log(8), rel=1e-3)
  assert refs["bigram"] < 0.05
  with pytest.raises(ValueError, match="outside"):
    reference_losses(cycle, cycle[None], (cycle + 1)[None], vocab_size=8)
  with pytest.raises(ValueError, match="one shape"):
    reference_losses(cycle, cycle[None, :5], cycle[None, :4], vocab_size=8)
