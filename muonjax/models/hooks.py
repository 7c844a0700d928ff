"""Hooks a model may define for the trainer, which knows no model by name.

:mod:`muonjax.train` builds every model the same way and asks it, through the
functions here, for what only the model knows. A model without a hook gets the
default (nothing added).

* ``optimizer_constraint(self, learning_rate) -> Optional[optax.GradientTransformation]``
  (:class:`OptimizerConstraint`): a stage the trainer chains after the
  optimizer, ``optax.chain(tx, stage)``, so it sees the optimizer's update and
  may change it (e.g. :meth:`muonjax.models.NGPT.optimizer_constraint`, which
  keeps nGPT's weight vectors on the unit sphere, Loshchilov et al. 2024,
  arXiv 2410.01131). ``learning_rate`` is the run's schedule ``count -> η``
  (or a float), for stages whose step depends on η; settings of the stage are
  fields of the model's config.
"""

from __future__ import annotations

from typing import Any, Optional, Protocol, runtime_checkable

import optax


@runtime_checkable
class OptimizerConstraint(Protocol):
  """A model whose parameters need a stage after every optimizer update."""

  def optimizer_constraint(self, learning_rate: optax.ScalarOrSchedule
                           ) -> Optional[optax.GradientTransformation]:
    """The stage to chain after the optimizer (``None``: none needed).

    Args:
      learning_rate: the run's learning rate, a float or a schedule ``count -> η``.
    """


def optimizer_constraint(model: Any, learning_rate: optax.ScalarOrSchedule
                         ) -> Optional[optax.GradientTransformation]:
  """``model.optimizer_constraint(learning_rate)`` for an :class:`OptimizerConstraint`
  model, else ``None``."""
  if isinstance(model, OptimizerConstraint):
    return model.optimizer_constraint(learning_rate)
  return None
