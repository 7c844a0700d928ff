"""Claims against campaigns (muonjax.claims): verdicts from paired intervals, the table."""

import pytest

from muonjax import claims, intervals


def campaign(**losses):
  """A campaign payload whose entry ``name`` has one final loss per seed (None: diverged)."""
  return {"runs": {name: [{"diverged": True} if v is None else {"final_val_loss": v}
                          for v in values] for name, values in losses.items()}}


def test_paired_interval_is_the_per_seed_difference():
  p = campaign(a=[1.0, 2.0, 3.0], b=[1.5, 2.4, 3.7])
  got = claims.paired(p, "a", "b")
  want = intervals.paired_interval([1.0, 2.0, 3.0], [1.5, 2.4, 3.7])
  assert got == want
  assert got["mean"] == pytest.approx(-(0.5 + 0.4 + 0.7) / 3)


def test_lower_claim_verdicts():
  # Seeds shift both losses together: the pairing resolves a small gap.
  p = campaign(a=[1.00, 2.00, 3.00], b=[1.10, 2.11, 3.09], c=[0.9, 2.2, 2.95])
  row = claims.lower_claim(p, "a", "b", claim="a beats b", published="−10 %",
                           reasons={"reproduced": "as published"})
  assert row.verdict == "reproduced" and row.reason == "as published"
  assert row.ours.startswith("a − b: -0.1000 [") and "(3 seeds)" in row.ours
  assert claims.lower_claim(p, "b", "a", claim="b beats a", published="").verdict == \
      "contradicted"
  assert claims.lower_claim(p, "a", "c", claim="a beats c", published="").verdict == \
      "inconclusive"


def test_one_seed_or_diverged_runs_are_inconclusive():
  one = campaign(a=[1.0], b=[2.0])
  row = claims.lower_claim(one, "a", "b", claim="", published="")
  assert row.verdict == "inconclusive" and "one seed" in row.ours
  gone = campaign(a=[None, None], b=[2.0, 2.1])
  row = claims.lower_claim(gone, "a", "b", claim="", published="")
  assert row.verdict == "inconclusive" and row.ours.endswith("no finished pair")


def test_best_claim_needs_every_rival_beaten():
  p = campaign(w=[1.0, 2.0, 3.0], x=[1.2, 2.2, 3.2], y=[1.01, 2.05, 2.98],
               z=[0.8, 1.8, 2.81])
  assert claims.best_claim(p, "w", claim="", published="", entries=["w", "x"]).verdict == \
      "reproduced"
  tied = claims.best_claim(p, "w", claim="", published="", entries=["w", "x", "y"])
  assert tied.verdict == "inconclusive" and "w − y" in tied.ours  # the closest rival
  beaten = claims.best_claim(p, "w", claim="", published="")
  assert beaten.verdict == "contradicted" and "w − z" in beaten.ours
  with pytest.raises(ValueError, match="besides"):
    claims.best_claim(campaign(w=[1.0, 2.0]), "w", claim="", published="")


def test_claim_table_and_bad_verdict():
  rows = [claims.Claim("A < B", "1.0 vs 2.0", "−0.5 [−0.7, −0.3]", "reproduced"),
          claims.Claim("x | y", "n/a", "—", "inconclusive", "one seed")]
  text = claims.claim_table(rows)
  assert text.splitlines()[0].startswith("| published claim |")
  assert "**reproduced**" in text and "x / y" in text
  assert text.endswith("1 reproduced, 0 contradicted, 1 inconclusive of 2 claims.")
  with pytest.raises(ValueError, match="verdict"):
    claims.Claim("c", "p", "o", "agrees")
  with pytest.raises(KeyError, match="no entry 'q'"):
    claims.paired(campaign(a=[1.0]), "a", "q")
