"""The ``muonjax`` command.

Sub-commands: ``compare`` (one model, several optimizers, same data and seeds:
table, results.json and loss curves; ``--tune`` searches the learning rates
first), ``tune`` (each optimizer's learning rate, equal budgets), ``train``
(one model × one optimizer),
``sweep`` (a grid of learning rates or other hyperparameters), ``models``
(the model zoo with parameter counts), ``bench`` (the benchmark suite) and
``demo`` (a small MLP with mj.muon and optax.adamw). Bad input prints one
line to stderr and exits with status 2 (an ``--out`` that cannot be created
fails before any training); a run whose loss becomes NaN/Inf stops with
status 3, keeping its last good checkpoint; Ctrl-C saves a checkpoint and
exits with status 130. ``train --resume`` uses the newest checkpoint that
passes its integrity record (a damaged newer one is reported); on a finished
run it changes nothing.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import sys
import warnings
from typing import Any, Optional, Sequence


class UsageError(Exception):
  """Bad command-line input: reported as one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
  def error(self, message: str):  # one line instead of usage + message
    raise UsageError(f"{self.prog}: {message}")


def _positive_int(text: str) -> int:
  try:
    value = int(text)
  except ValueError:
    raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
  if value <= 0:
    raise argparse.ArgumentTypeError(f"must be > 0, got {value}")
  return value


def _positive_float(text: str) -> float:
  try:
    value = float(text)
  except ValueError:
    raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
  if not value > 0:
    raise argparse.ArgumentTypeError(f"must be > 0, got {value}")
  return value


def _value(text: str) -> Any:
  """A ``key=value`` flag's value: JSON when it parses (numbers, booleans, null), else the string."""
  try:
    return json.loads(text)
  except json.JSONDecodeError:
    return text


def _assignments(pairs: Optional[Sequence[str]], flag: str) -> dict:
  out = {}
  for pair in pairs or ():
    key, sep, text = pair.partition("=")
    if not sep or not key:
      raise UsageError(f"muonjax: error: {flag} expects key=value, got {pair!r}")
    out[key.strip()] = _value(text)
  return out


def _csv(text: str, kind=str) -> list:
  try:
    items = [kind(x) for x in text.split(",") if x.strip()]
  except ValueError:
    raise argparse.ArgumentTypeError(f"expected a comma-separated list, got {text!r}") from None
  if not items:
    raise argparse.ArgumentTypeError("expected at least one value")
  return items


def _mesh(text: str) -> dict:
  """``--mesh data=2,fsdp=4`` → ``{"data": 2, "fsdp": 4}`` (an omitted axis takes the remaining devices)."""
  mesh = {}
  for item in (x.strip() for x in text.split(",") if x.strip()):
    axis, sep, size = item.partition("=")
    axis = axis.strip()
    if not sep or axis not in ("data", "fsdp") or axis in mesh:
      raise argparse.ArgumentTypeError(
          f"expected AXIS=SIZE pairs over data, fsdp (e.g. data=2,fsdp=4), got {text!r}")
    try:
      mesh[axis] = int(size)
    except ValueError:
      raise argparse.ArgumentTypeError(f"{axis} size must be an integer, got {size!r}") from None
    if mesh[axis] < 1:
      raise argparse.ArgumentTypeError(f"{axis} size must be > 0, got {mesh[axis]}")
  if not mesh:
    raise argparse.ArgumentTypeError("expected AXIS=SIZE pairs, e.g. data=2,fsdp=4")
  return mesh


_MESH_HELP = ("device mesh, e.g. data=2,fsdp=4: batch over all devices, parameters and "
              "optimizer state sharded over fsdp (default: one device)")


def _run_dir(out: Optional[str], kind: str) -> str:
  """The run folder (``--out`` or ``runs/<kind>-<time>``), created and checked writable now,
  before any training.

  Raises:
    UsageError: it exists and is not a folder, cannot be created, or is not
      writable (one line).
  """
  if not out:
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    out = os.path.join("runs", f"{kind}-{stamp}")
  if os.path.exists(out) and not os.path.isdir(out):
    raise UsageError(f"muonjax: error: --out {out!r} exists and is not a directory")
  try:
    os.makedirs(out, exist_ok=True)
    probe = os.path.join(out, f".muonjax-write-test-{os.getpid()}")
    with open(probe, "w"):
      pass
    os.remove(probe)
  except OSError as e:
    raise UsageError(f"muonjax: error: --out {out!r} cannot be created or written "
                     f"({e.strerror or type(e).__name__})") from None
  return out


def _ms(seconds: Optional[float]) -> str:
  return "n/a ms/step (no timed step)" if seconds is None else f"{1e3 * seconds:.1f} ms/step"


def _loss(value: Optional[float]) -> str:
  return "n/a" if value is None else f"{value:.4f}"


class _Progress:
  """A tqdm bar per run (loss, eval loss and tokens/s), or one log line per evaluation."""

  def __init__(self, quiet: bool):
    self.quiet = quiet

  def __call__(self, label: str, total: int):
    if self.quiet:
      def log(step, record):
        if "eval_loss" in record or step == total:
          ev = record.get("eval_loss")
          print(f"{label} step {step}/{total} loss {record['loss']:.4f}"
                + ("" if ev is None else f" val {ev:.4f}"), flush=True)
      return log
    from tqdm import tqdm
    bar = None  # created at the first step, so an error before it prints one clean line
    last_eval = [None]

    def update(step, record):
      nonlocal bar
      if bar is None:
        bar = tqdm(total=total, desc=label, unit="step", leave=True, dynamic_ncols=True)
      if record.get("eval_loss") is not None:
        last_eval[0] = record["eval_loss"]
      post = {"loss": f"{record['loss']:.3f}", "tok/s": f"{record.get('tokens_per_s', 0):.0f}"}
      if last_eval[0] is not None:
        post["val"] = f"{last_eval[0]:.3f}"
      bar.set_postfix(post, refresh=False)
      bar.update(step - bar.n)
      if step >= total:
        bar.close()
    return update


def _train_config_from_args(args):
  from muonjax.train import TrainConfig

  fields: dict[str, Any] = {}
  if args.config:
    try:
      with open(args.config) as f:
        fields = json.load(f)
    except OSError as e:
      raise ValueError(f"cannot read config file {args.config!r}: {e.strerror}") from None
    except json.JSONDecodeError as e:
      raise ValueError(f"config file {args.config!r} is not valid JSON: {e}") from None
    if not isinstance(fields, dict):
      raise ValueError(f"config file {args.config!r} must hold a JSON object of TrainConfig fields")
    valid = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(fields) - valid)
    if unknown:
      raise ValueError(f"config file {args.config!r}: unknown field(s) {unknown}; "
                       f"valid: {sorted(valid)}")
  flags = dict(model=args.model, optimizer=args.optimizer, learning_rate=getattr(args, "lr", None),
               steps=args.steps, batch_size=args.batch_size, seq_len=args.seq_len,
               grad_accum=args.grad_accum, schedule=args.schedule,
               warmup_steps=args.warmup_steps, eval_every=args.eval_every,
               eval_batches=args.eval_batches, seed=args.seed, data=args.data,
               mesh=args.mesh)
  fields.update({k: v for k, v in flags.items() if v is not None})
  fields["model_fields"] = dict(fields.get("model_fields", {}), **_assignments(args.set, "--set"))
  fields["optimizer_hparams"] = dict(fields.get("optimizer_hparams", {}),
                                     **_assignments(args.hparam, "--hparam"))
  return TrainConfig(**fields)


def _train(args) -> int:
  from muonjax.train import train

  config = _train_config_from_args(args)
  out = _run_dir(args.out, "train")
  config = dataclasses.replace(
      config, checkpoint_dir=os.path.abspath(os.path.join(out, "checkpoints")),
      checkpoint_every=args.checkpoint_every, log_path=os.path.join(out, "metrics.jsonl"))
  progress = _Progress(args.quiet)(f"{config.model}/{config.optimizer}", config.steps)
  result = train(config, resume=args.resume, on_step=progress)
  path = os.path.join(out, "result.json")
  if result.get("steps_run") == 0:  # a finished run resumed: its results stay as they are
    print(f"{config.model} × {config.optimizer}: {out} already finished at step "
          f"{result['steps']}; nothing to do ({path} left unchanged; raise --steps to extend it)")
    return 0
  if result.get("time_per_step") is None and args.resume:
    # This invocation timed no step (it ran only its compiling one): keep the
    # timing an earlier invocation of the same run measured rather than erase it.
    try:
      with open(path) as f:
        before = json.load(f)
    except (OSError, ValueError):
      before = {}
    if isinstance(before, dict) and before.get("time_per_step") is not None:
      result.update(time_per_step=before["time_per_step"],
                    tokens_per_s=before.get("tokens_per_s"),
                    timing="measured by an earlier invocation (this one timed no step)")
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    json.dump(result, f, indent=1, default=str)
  os.replace(tmp, path)
  skipped = result.get("skipped_steps") or 0
  print(f"{config.model} × {config.optimizer}: final train loss "
        f"{_loss(result['final_train_loss'])}, val loss {_loss(result['final_val_loss'])}, "
        f"{_ms(result['time_per_step'])}"
        + (f", {skipped} step(s) skipped (non-finite gradient)" if skipped else "")
        + f" → {out}")
  return 0


def _comparison_preset(args):
  """The :class:`muonjax.compare.ComparePreset` the ``compare``/``tune`` flags describe."""
  from muonjax import compare

  preset = compare.get_preset(args.preset)
  changes: dict[str, Any] = {}
  if args.model:
    changes["model"] = args.model
    if args.model != preset.model:
      changes["model_fields"] = {}
  if args.set:
    changes["model_fields"] = dict(changes.get("model_fields", preset.model_fields),
                                   **_assignments(args.set, "--set"))
  optimizers = {k: dict(v) for k, v in preset.optimizers.items()}
  if args.optimizers:
    from muonjax.optimizers import OPTIMIZERS
    unknown = [o for o in args.optimizers if o not in OPTIMIZERS]
    if unknown:
      raise ValueError(f"unknown optimizer(s) {unknown}; available: {sorted(OPTIMIZERS)}")
    optimizers = {o: optimizers.get(o, {"learning_rate": 0.02 if o != "adamw" else 3e-3})
                  for o in args.optimizers}
  for name, lr in _assignments(args.lr, "--lr").items():
    if name not in optimizers:
      raise ValueError(f"--lr {name}=...: {name!r} is not among the compared optimizers "
                       f"{list(optimizers)}")
    optimizers[name]["learning_rate"] = lr
  changes["optimizers"] = optimizers
  for name in ("steps", "batch_size", "seq_len", "data", "eval_every"):
    if getattr(args, name) is not None:
      changes[name] = getattr(args, name)
  if args.seeds is not None:
    changes["seeds"] = tuple(args.seeds)
  if args.baseline_length is not None:
    changes["baseline_length"] = args.baseline_length
  if args.mesh is not None:
    changes["mesh"] = args.mesh
  if "adamw" not in optimizers:
    changes["baseline"] = next(iter(optimizers))
  changed = sorted(k for k in changes if k != "optimizers")
  if args.optimizers or args.lr:
    changed = ["learning rates / optimizers"] + changed
  if changed:  # the preset's rates were chosen for its own settings
    changes["rate_source"] = (f"{preset.rate_source}, for the preset's own settings; this run "
                              f"changes {', '.join(changed)}")
  return compare.check_preset(dataclasses.replace(preset, **changes))


def _read_tune(path: str) -> dict:
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, json.JSONDecodeError) as e:
    raise ValueError(f"--tune-from {path}: cannot read a tune.json ({e})") from None


def _run_tune(preset, out: str, args) -> dict:
  from muonjax import tune

  tune.use_compilation_cache(args.cache)  # callers checked the budget already
  progress = _Progress(args.quiet)
  payload = tune.tune_preset(preset, out, budget=args.budget,
                             on_run=lambda name, lr: progress(f"{name} lr {lr:g}", preset.steps))
  print(payload["table"])
  print(f"wrote {os.path.join(out, 'tune.json')}, tune.md")
  return payload


def _tune(args) -> int:
  from muonjax import tune

  preset = _comparison_preset(args)
  tune.check_budget(args.budget)  # bad flags before the run folder is made
  _run_tune(preset, _run_dir(args.out, "tune"), args)
  return 0


def _compare(args) -> int:
  from muonjax import compare, tune

  preset = _comparison_preset(args)
  if args.tune and args.tune_from:
    raise ValueError("--tune and --tune-from exclude each other")
  if args.tune:
    tune.check_budget(args.budget)  # bad flags before the run folder is made
  tuned = _read_tune(args.tune_from) if args.tune_from else None
  if tuned is not None:
    preset = tune.tuned_preset(preset, tuned, args.tune_from)
  out = _run_dir(args.out, "compare")
  tune.use_compilation_cache(args.cache)  # the seeds of one optimizer compile once
  if args.tune:
    tuned = _run_tune(preset, os.path.join(out, "tune"), args)
    preset = tune.tuned_preset(preset, tuned, os.path.join(out, "tune", "tune.json"))
  progress = _Progress(args.quiet)
  payload = compare.run_comparison(
      preset, out, on_run=lambda name, seed: progress(f"{name} seed {seed}",
                                                      compare.steps_of(preset, name)))
  print(payload["header"])
  print(payload["table"])
  print(f"wrote {os.path.join(out, 'results.json')}, table.md, curves.png")
  return 0


def _sweep(args) -> int:
  from muonjax import sweep

  grid = {"learning_rate": args.lrs}
  for key, values in _assignments(args.grid, "--grid").items():
    grid[key] = values if isinstance(values, list) else [values]
  base = _train_config_from_args(args)
  out = _run_dir(args.out, "sweep")
  progress = _Progress(args.quiet)
  payload = sweep.run_sweep(base, grid, out, on_run=lambda label: progress(label, base.steps))
  print(payload["table"])
  print(f"wrote {os.path.join(out, 'results.json')}, table.md, sweep.png")
  return 0


def _models(args) -> int:
  from muonjax.models import presets

  print(presets.listing())
  return 0


def _demo(args) -> int:
  from muonjax import demo
  cfg = demo.DemoConfig(steps=args.steps, seed=args.seed, muon_lr=args.muon_lr,
                        adamw_lr=args.adamw_lr)
  demo.run(cfg)
  return 0


def _bench(args, rest) -> int:
  from muonjax import bench
  return bench.main(rest)


def _add_train_flags(p, *, lr: bool = True) -> None:
  p.add_argument("--config", help="JSON file of TrainConfig fields (flags override it)")
  p.add_argument("--model", help="model name (see `muonjax models`)")
  p.add_argument("--optimizer", help="optimizer name (mj.OPTIMIZERS)")
  if lr:
    p.add_argument("--lr", type=_positive_float, help="peak learning rate")
  p.add_argument("--steps", type=_positive_int)
  p.add_argument("--batch-size", type=_positive_int)
  p.add_argument("--seq-len", type=_positive_int)
  p.add_argument("--grad-accum", type=_positive_int)
  p.add_argument("--schedule", choices=("constant", "cosine", "wsd"))
  p.add_argument("--warmup-steps", type=int)
  p.add_argument("--eval-every", type=int)
  p.add_argument("--eval-batches", type=_positive_int)
  p.add_argument("--seed", type=int)
  p.add_argument("--data", help="text file, folder, or nanoGPT .bin shards (glob); "
                 "default: the Python standard library's source")
  p.add_argument("--set", action="append", metavar="FIELD=VALUE", help="model config field")
  p.add_argument("--hparam", action="append", metavar="NAME=VALUE",
                 help="optimizer hyperparameter")
  p.add_argument("--mesh", type=_mesh, metavar="data=D,fsdp=F", help=_MESH_HELP)
  p.add_argument("--out", help="run folder (default runs/<command>-<time>)")
  p.add_argument("--quiet", action="store_true", help="log lines instead of progress bars")


def _add_comparison_flags(p) -> None:
  p.add_argument("--preset", default="default", help="default | loopformer | loopformer-open | loopformer-gpt | smoke")
  p.add_argument("--model")
  p.add_argument("--set", action="append", metavar="FIELD=VALUE")
  p.add_argument("--optimizers", type=_csv, help="comma-separated optimizer names")
  p.add_argument("--lr", action="append", metavar="OPTIMIZER=LR",
                 help="a learning rate (with tuning: the centre of the first grid)")
  p.add_argument("--steps", type=_positive_int)
  p.add_argument("--batch-size", type=_positive_int)
  p.add_argument("--seq-len", type=_positive_int)
  p.add_argument("--eval-every", type=_positive_int)
  p.add_argument("--seeds", type=lambda t: _csv(t, int))
  p.add_argument("--baseline-length", type=float, metavar="X",
                 help="the baseline trains X times the steps (speed-ups are interpolated on "
                 "its curve; X > 1 needs the constant schedule)")
  p.add_argument("--data")
  p.add_argument("--mesh", type=_mesh, metavar="data=D,fsdp=F", help=_MESH_HELP)
  p.add_argument("--budget", type=_positive_int, default=7,
                 help="tuning: runs per optimizer, the same for every one (>= 3)")
  p.add_argument("--cache", help="JAX compilation cache folder "
                 "(default ~/.cache/muonjax/xla)")
  p.add_argument("--out")
  p.add_argument("--quiet", action="store_true")


def build_parser() -> argparse.ArgumentParser:
  parser = _Parser(prog="muonjax", description=__doc__.splitlines()[0])
  sub = parser.add_subparsers(dest="command", parser_class=_Parser)
  compare = sub.add_parser("compare", help="train one model with several optimizers, side by side")
  _add_comparison_flags(compare)
  compare.add_argument("--tune", action="store_true",
                       help="tune every optimizer's learning rate first (see `muonjax tune`)")
  compare.add_argument("--tune-from", metavar="TUNE_JSON",
                       help="take every optimizer's learning rate from a `muonjax tune` result")
  tune = sub.add_parser("tune", help="search every optimizer's learning rate with equal budgets")
  _add_comparison_flags(tune)
  train = sub.add_parser("train", help="train one model with one optimizer")
  _add_train_flags(train)
  train.add_argument("--checkpoint-every", type=int, default=0)
  train.add_argument("--resume", action="store_true", help="continue from the run folder's checkpoint")
  sweep = sub.add_parser("sweep", help="grid over learning rates (and other hyperparameters)")
  _add_train_flags(sweep, lr=False)
  sweep.add_argument("--lrs", type=lambda t: _csv(t, _positive_float), required=True,
                     help="comma-separated learning rates")
  sweep.add_argument("--grid", action="append", metavar="NAME=[V1,V2]",
                     help="another hyperparameter's values (JSON list)")
  models = sub.add_parser("models", help="the model zoo and parameter counts")
  models.add_argument("--list", action="store_true", help="(default) list every model and preset")
  demo = sub.add_parser("demo", help="train a small MLP with mj.muon and optax.adamw")
  demo.add_argument("--steps", type=_positive_int, default=300)
  demo.add_argument("--seed", type=int, default=0)
  demo.add_argument("--muon-lr", type=_positive_float, default=0.02)
  demo.add_argument("--adamw-lr", type=_positive_float, default=1e-2)
  sub.add_parser("bench", help="orthogonalization benchmark (see `muonjax bench --help`)",
                 add_help=False)
  return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
  argv = list(sys.argv[1:] if argv is None else argv)
  parser = build_parser()
  with warnings.catch_warnings():
    warnings.showwarning = _show_warning
    return _main(parser, argv)


def _show_warning(message, category, filename, lineno, file=None, line=None):
  """Warnings (a checkpoint that failed verification...) as one ``muonjax: warning:`` line."""
  print(f"muonjax: warning: {_one_line(message)}", file=sys.stderr)


def _main(parser, argv) -> int:
  try:
    if argv[:1] == ["bench"]:
      return _bench(None, argv[1:])
    args = parser.parse_args(argv)
    if args.command is None:
      parser.print_help()
      return 2
    commands = {"demo": _demo, "compare": _compare, "tune": _tune, "train": _train,
                "sweep": _sweep, "models": _models}
    return commands[args.command](args)
  except UsageError as e:
    print(str(e), file=sys.stderr)
    return 2
  except ValueError as e:
    print(f"muonjax: error: {_one_line(e)}", file=sys.stderr)
    return 2
  except KeyboardInterrupt as e:
    from muonjax.train import TrainingInterrupted
    if isinstance(e, TrainingInterrupted):
      print(f"muonjax: {e}", file=sys.stderr)
    else:  # before the training loop started (loading, compiling)
      print("muonjax: interrupted before training started; no checkpoint was written",
            file=sys.stderr)
    return 130
  except Exception as e:  # the loop's NonFiniteLossError and nothing else
    from muonjax.train import NonFiniteLossError
    if isinstance(e, NonFiniteLossError):
      print(f"muonjax: error: {_one_line(e)}", file=sys.stderr)
      return 3
    raise


def _one_line(error: Exception) -> str:
  return " ".join(str(error).split())


if __name__ == "__main__":
  raise SystemExit(main())
