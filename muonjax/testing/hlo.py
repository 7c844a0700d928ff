"""HLO text audit: where the collectives of a compiled (or lowered) module run.

Used by the tests (and anyone checking a layout) to assert, e.g., that the
Newton–Schulz loops of a sharded train step contain no collective
(``docs/performance.md#sharding``). Parses XLA's HLO text format
(``jax.jit(f).lower(...).compile().as_text()``); nothing here is on the
optimizer's import path.
"""

from __future__ import annotations

import re
from typing import Optional

COLLECTIVES = ("all-reduce", "all-gather", "reduce-scatter", "all-to-all",
               "ragged-all-to-all", "collective-permute", "collective-broadcast")
"""HLO opcodes counted as collectives (async ``-start``/``-done`` pairs count once)."""

_HEADER = re.compile(r"^(?:ENTRY\s+)?%?([\w.\-]+)\s+\(.*\)\s+->\s+.*\{\s*$")
_CALLED = re.compile(
    r"\b(?:calls|to_apply|body|condition|true_computation|false_computation|"
    r"select|scatter)=%?([\w.\-]+)")
_BRANCHES = re.compile(r"branch_computations=\{([^}]*)\}")
_WHILE_BODY = re.compile(r"\bbody=%?([\w.\-]+)")


def _computations(hlo_text: str) -> dict:
  comps, current = {}, None
  for line in hlo_text.splitlines():
    if current is None:
      match = _HEADER.match(line.strip())
      if match:
        current = match.group(1)
        comps[current] = []
    elif line.strip() == "}":
      current = None
    else:
      comps[current].append(line)
  return comps


def _opcode(line: str) -> Optional[str]:
  """Opcode of an HLO instruction line ``%name = TYPE opcode(...)``."""
  if "=" not in line:
    return None
  rest = line.split("=", 1)[1].lstrip()
  if rest.startswith("("):  # tuple type: skip to the matching parenthesis
    depth = 0
    for i, ch in enumerate(rest):
      depth += ch == "("
      depth -= ch == ")"
      if depth == 0:
        rest = rest[i + 1:]
        break
  else:
    rest = rest.split(" ", 1)[1] if " " in rest else ""
  match = re.match(r"\s*([a-z][\w\-]*)\(", rest)
  return match.group(1) if match else None


def _collective(opcode: Optional[str]) -> Optional[str]:
  if opcode is None:
    return None
  base = re.sub(r"-(start|done|update)$", "", opcode)
  if base in COLLECTIVES and not opcode.endswith("-done"):
    return base
  return None


def _called(line: str) -> list:
  names = _CALLED.findall(line)
  for group in _BRANCHES.findall(line):
    names += [g.strip().lstrip("%") for g in group.split(",") if g.strip()]
  return names


def collectives_in_while_loops(hlo_text: str, op_name: Optional[str] = None) -> list:
  """Collective ops executed inside ``while`` loop bodies of an HLO module.

  Parses the (compiled or lowered) HLO text, finds every ``while``
  instruction's body computation and walks it, with everything it calls
  (fusions, nested loops, conditionals), for collectives (all-reduce,
  all-gather, reduce-scatter, all-to-all, collective-permute, ...; async
  ``-start`` forms count once).

  Args:
    hlo_text: e.g. ``jax.jit(f).lower(x).compile().as_text()``.
    op_name: only loops whose ``while`` instruction's metadata ``op_name``
      contains this string; ``"newton_schulz"`` selects the Newton–Schulz loops
      (:func:`muonjax.newton_schulz` runs its scan under that named scope)
      among a train step's other loops (e.g. the scan over layers).

  Returns:
    A list of ``(while_body_name, collective_kind, instruction_line)``, one per
    collective instruction (an instruction reached from two loops is listed
    for each).
  """
  comps = _computations(hlo_text)
  found = []
  bodies = while_loops(hlo_text, op_name)
  for body in bodies:
    seen, stack = set(), [body]
    while stack:
      name = stack.pop()
      if name in seen or name not in comps:
        continue
      seen.add(name)
      for line in comps[name]:
        kind = _collective(_opcode(line))
        if kind:
          found.append((body, kind, line.strip()))
        stack.extend(_called(line))
  return found


def while_loops(hlo_text: str, op_name: Optional[str] = None) -> list:
  """Body computation names of the ``while`` loops (optionally filtered by ``op_name``)."""
  out = []
  for lines in _computations(hlo_text).values():
    for line in lines:
      if _opcode(line) == "while":
        meta = re.search(r'op_name="([^"]*)"', line)
        if op_name is None or (meta and op_name in meta.group(1)):
          out += _WHILE_BODY.findall(line)
  return out


def count_collectives(hlo_text: str) -> dict:
  """``{kind: count}`` of every collective instruction in an HLO module."""
  counts: dict = {}
  for lines in _computations(hlo_text).values():
    for line in lines:
      kind = _collective(_opcode(line))
      if kind:
        counts[kind] = counts.get(kind, 0) + 1
  return counts
