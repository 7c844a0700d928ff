"""Published-size presets: analytic parameter counts equal the built (abstract) models' counts."""

import jax
import pytest
from flax import nnx

from muonjax import models
from muonjax.models import presets


@pytest.mark.parametrize("name", sorted(presets.PRESETS))
def test_preset_count_matches_abstract_model(name):
  model_name, fields, _ = presets.PRESETS[name]
  abstract = nnx.eval_shape(lambda: models.build(model_name, rngs=0, **fields))
  built = sum(x.size for x in jax.tree.leaves(nnx.state(abstract, nnx.Param)))
  assert built == models.analytic_param_count(presets.preset_config(name))


def test_published_sizes():
  counts = {name: models.analytic_param_count(presets.preset_config(name))
            for name in presets.PRESETS}
  assert counts["loopformer-3x8"] == 278_169_600
  assert counts["moe-study-mhsa"] == 79_059_840
  assert round(counts["gpt-124m"] / 1e6) == 124
  assert round(counts["gated-ngpt-155m"] / 1e6) == 155


def test_unknown_preset_lists_names():
  with pytest.raises(ValueError, match="gpt-124m"):
    presets.preset_config("gpt-7b")
