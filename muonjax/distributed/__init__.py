"""Distributed training on a ``("data", "fsdp")`` device mesh.

* :mod:`muonjax.distributed.mesh`: the mesh (:func:`make_mesh`, :data:`AXES`),
  FSDP placement of parameters and optimizer state, batch sharding;
* :mod:`muonjax.distributed.newton_schulz`: stack-sharded orthogonalization
  and the Gram all-reduce Newton–Schulz.

Importing this package installs :func:`orthogonalize_stack` as the strategy
the ``orthogonalize`` stage's ``strategy="auto"`` uses under a context mesh of
several devices (:func:`muonjax.transforms.orthogonalize.set_mesh_strategy`);
the stage itself imports nothing from here. Design:
``docs/performance.md#sharding``.

Example::

  from muonjax import distributed as dist
  mesh = dist.make_mesh(data=2, fsdp=4)
  with jax.set_mesh(mesh):
    model = dist.shard_module(model, dist.param_shardings(model, mesh))
    optimizer = nnx.Optimizer(model, mj.muon(0.02), wrt=nnx.Param)
    optimizer = dist.shard_module(
        optimizer, dist.state_shardings(nnx.state(optimizer),
                                        dist.param_shardings(model, mesh)))
    batch = dist.shard_batch(batch, mesh)
    loss = train_step(model, optimizer, batch)   # nnx.jit
"""

from __future__ import annotations

from muonjax.distributed.mesh import (
    AXES,
    DATA,
    FSDP,
    AxisNames,
    axis_size,
    batch_sharding,
    leaf_path,
    leaf_spec,
    make_mesh,
    param_shardings,
    shard_batch,
    shard_module,
    state_shardings,
)
from muonjax.distributed.newton_schulz import (
    newton_schulz_sharded,
    orthogonalize_stack,
    shard_stack_strategy,
    stack_axes,
)
from muonjax.transforms.orthogonalize import set_mesh_strategy as _set_mesh_strategy

_set_mesh_strategy(orthogonalize_stack)

__all__ = [
    "AXES", "DATA", "FSDP", "AxisNames", "axis_size", "batch_sharding", "leaf_path",
    "leaf_spec", "make_mesh", "param_shardings", "shard_batch", "shard_module",
    "state_shardings", "newton_schulz_sharded", "orthogonalize_stack",
    "shard_stack_strategy", "stack_axes",
]
