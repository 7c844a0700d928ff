"""Published claims against our runs: one row per claim, a verdict from a paired interval.

A study reproduces a paper's claims ("Muon's loss is lower than AdamW's",
"full Muon is the best of the ablation"). Each claim here is checked on a
campaign (:func:`muonjax.study.run_campaign`) whose entries trained on the
same seeds: the per-seed differences of the final losses are paired
(:func:`muonjax.intervals.paired_interval`), and the verdict is

* ``reproduced`` when the whole 95 % interval lies on the claimed side of 0;
* ``contradicted`` when it lies on the other side;
* ``inconclusive`` when it straddles 0 (the seeds do not separate the two) or
  there are fewer than two paired seeds.

:func:`claim_table` renders the rows as Markdown: published claim | the
source's number | ours with its interval | verdict | why we differ.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Optional, Sequence

from muonjax import intervals

VERDICTS = ("reproduced", "contradicted", "inconclusive")


@dataclasses.dataclass(frozen=True)
class Claim:
  """One row of a claim table.

  Attributes:
    claim: the published statement, in our words.
    published: the source's number(s) behind it.
    ours: our number(s), with their interval.
    verdict: one of :data:`VERDICTS`.
    reason: why ours differs, or what limits the check.
  """

  claim: str
  published: str
  ours: str
  verdict: str
  reason: str = ""

  def __post_init__(self):
    if self.verdict not in VERDICTS:
      raise ValueError(f"Claim.verdict must be one of {VERDICTS}; got {self.verdict!r}")


def losses(payload: Mapping[str, Any], entry: str) -> list[Optional[float]]:
  """The final validation loss of every seed of ``entry`` in a campaign (``None``: diverged)."""
  runs = payload["runs"]
  if entry not in runs:
    raise KeyError(f"no entry {entry!r} in the campaign; entries: {list(runs)}")
  return [None if r.get("diverged") else r["final_val_loss"] for r in runs[entry]]


def paired(payload: Mapping[str, Any], a: str, b: str) -> dict:
  """The paired 95 % interval of ``loss(a) − loss(b)`` over the campaign's seeds."""
  return intervals.paired_interval(losses(payload, a), losses(payload, b))


def interval_text(interval: Mapping[str, Any], spec: str = "+.4f") -> str:
  """``+0.0123 [−0.0040, +0.0286] (3 seeds)``, or what is missing."""
  if interval.get("mean") is None:
    return "no finished pair"
  if interval.get("lo") is None:
    return f"{interval['mean']:{spec}} (one seed: no interval)"
  return (f"{interval['mean']:{spec}} [{interval['lo']:{spec}}, {interval['hi']:{spec}}] "
          f"({interval['n']} seeds)")


def direction_verdict(interval: Mapping[str, Any], claimed: str) -> str:
  """The verdict on "the difference is ``claimed``" (``"negative"`` or ``"positive"``)."""
  if claimed not in ("negative", "positive"):
    raise ValueError(f"claimed must be 'negative' or 'positive'; got {claimed!r}")
  side = intervals.verdict(interval)  # better: interval below 0; worse: above 0
  if side in ("tie", "inconclusive"):
    return "inconclusive"
  below = side == "better"
  return "reproduced" if below == (claimed == "negative") else "contradicted"


def lower_claim(payload: Mapping[str, Any], a: str, b: str, *, claim: str, published: str,
                reasons: Optional[Mapping[str, str]] = None) -> Claim:
  """The claim "``a`` ends at a lower loss than ``b``", checked on one campaign.

  Args:
    payload: the campaign both entries trained in (same seeds).
    a, b: entry names.
    claim: the claim's wording.
    published: the source's numbers.
    reasons: verdict → the reason column's text for that outcome.
  """
  interval = paired(payload, a, b)
  verdict = direction_verdict(interval, "negative")
  return Claim(claim, published, f"{a} − {b}: {interval_text(interval)}", verdict,
               (reasons or {}).get(verdict, ""))


def best_claim(payload: Mapping[str, Any], winner: str, *, claim: str, published: str,
               entries: Optional[Sequence[str]] = None,
               reasons: Optional[Mapping[str, str]] = None) -> Claim:
  """The claim "``winner`` has the lowest loss of ``entries``" (default: every entry).

  ``reproduced`` when ``winner`` is below every other entry beyond its paired
  interval; ``contradicted`` when some entry is below ``winner`` beyond it;
  ``inconclusive`` otherwise. The ours column names the closest rival (or the
  entry furthest below ``winner``).
  """
  others = [e for e in (entries or list(payload["runs"])) if e != winner]
  if not others:
    raise ValueError(f"best_claim needs at least one entry besides {winner!r}")
  checks = {e: paired(payload, winner, e) for e in others}
  verdicts = {e: direction_verdict(iv, "negative") for e, iv in checks.items()}
  if any(v == "contradicted" for v in verdicts.values()):
    verdict = "contradicted"
  elif all(v == "reproduced" for v in verdicts.values()):
    verdict = "reproduced"
  else:
    verdict = "inconclusive"
  means = {e: iv["mean"] for e, iv in checks.items() if iv["mean"] is not None}
  # The rival: the entry with the largest winner − entry (the smallest margin, or the
  # entry furthest below the winner).
  rival = max(means, key=means.get) if means else others[0]
  ours = f"{winner} − {rival}: {interval_text(checks[rival])}"
  return Claim(claim, published, ours, verdict, (reasons or {}).get(verdict, ""))


def claim_table(rows: Sequence[Claim]) -> str:
  """The claims as a Markdown table."""
  lines = ["| published claim | source's number | ours [95 % CI] | verdict | why / caveat |",
           "|---|---|---|---|---|"]
  for c in rows:
    cells = [c.claim, c.published, c.ours, f"**{c.verdict}**", c.reason or "—"]
    lines.append("| " + " | ".join(x.replace("|", "/") for x in cells) + " |")
  counts = {v: sum(c.verdict == v for c in rows) for v in VERDICTS}
  lines += ["", ", ".join(f"{counts[v]} {v}" for v in VERDICTS) + f" of {len(rows)} claims."]
  return "\n".join(lines)
