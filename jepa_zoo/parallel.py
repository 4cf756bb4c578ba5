"""Fully sharded data parallel training (``trainer.strategy=fsdp``), on torch's FSDP2 ``fully_shard``.

Every process holds ``1/world_size`` of each parameter, gradient and AdamW moment; a unit's
full weights are all-gathered just before its forward (and again for its backward when
``fsdp.reshard_after_forward``), and gradients are reduce-scattered.  For ViT-H/g, whose weights,
gradients and moments do not fit one GPU next to the activations.

Units (:func:`shard_`): every transformer block (each type in :mod:`jepa_zoo.models.blocks`: the
encoders' and the predictor's, timm's ``Block`` and the RoPE ViT's ``EvaBlock``), then every child module of the method that has parameters (``backbone``,
``target_encoder``, ``predictor``, ``projector``, ``probe``).  An EMA target encoder is sharded
exactly like its online encoder, so each process updates its own shard:
``θ̄_shard ← m·θ̄_shard + (1 − m)·θ_shard`` is the EMA of the full weights, with no communication.

The strategy is Lightning's :class:`~lightning.pytorch.strategies.ModelParallelStrategy` with
one data-parallel mesh dimension of ``num_nodes × devices`` processes and no tensor
parallelism.  Unlike Lightning's FSDP1 ``FSDPStrategy`` it also runs on CPU processes (gloo),
which is how the tests check it against one process.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from typing import Any, Iterator, List, Optional

import torch
from lightning.pytorch.strategies import ModelParallelStrategy
from torch import nn

log = logging.getLogger(__name__)

# methods called instead of ``forward`` that need the unit's full weights (FSDP2 hooks ``forward`` only)
FORWARD_METHODS = ("forward_tokens",)
PARAM_DTYPES = {"bf16": torch.bfloat16}  # fp16 would need a gradient scaler


def shard_(model: nn.Module, mesh: Any, *, reshard_after_forward: bool = True,
           param_dtype: Optional[str] = None) -> List[str]:
    """Apply ``fully_shard`` to ``model``'s blocks and parameter-holding children, in place.

    Args:
        model: a method (:class:`~jepa_zoo.methods.base.JEPAModule`); it must hold no parameters
            of its own outside its children.
        mesh: the 1-D data-parallel device mesh.
        reshard_after_forward: free the gathered weights after each unit's forward (ZeRO-3) or
            keep them until the backward (less communication, more memory).  Units without
            trainable parameters (the EMA target) always reshard: they have no backward.
        param_dtype: ``bf16``: gather weights (and run the units) in bf16, reduce gradients in
            fp32; ``None``: weights stay fp32 (autocast still runs the matmuls in bf16 under
            ``trainer.precision=bf16-mixed``).

    Returns:
        The names of the sharded modules, blocks first.
    """
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard, register_fsdp_forward_method

    own = [n for n, _ in model.named_parameters(recurse=False)]
    if own:
        raise ValueError(f"fsdp: {type(model).__name__} holds parameters outside its child modules: {own}")
    if param_dtype is not None and param_dtype not in PARAM_DTYPES:
        raise ValueError(f"fsdp.param_dtype must be one of {sorted(PARAM_DTYPES)} or null, got {param_dtype!r}")
    kwargs: dict = {"mesh": mesh}
    if param_dtype is not None:
        kwargs["mp_policy"] = MixedPrecisionPolicy(param_dtype=PARAM_DTYPES[param_dtype], reduce_dtype=torch.float32)

    def shard(m: nn.Module) -> None:
        # a frozen unit (the EMA target) has no backward to free its gathered weights in: it always
        # reshards after its forward, so that its parameters are shards again for the EMA update
        trainable = any(p.requires_grad for p in m.parameters())
        fully_shard(m, reshard_after_forward=reshard_after_forward or not trainable, **kwargs)

    from jepa_zoo.models.blocks import block_names

    names = block_names(model)
    for n in names:
        shard(model.get_submodule(n))
    for n, child in model.named_children():
        if next(child.parameters(), None) is None:
            continue
        shard(child)
        for method in FORWARD_METHODS:
            if hasattr(child, method):
                register_fsdp_forward_method(child, method)
        names.append(n)
    return names


def is_sharded(model: nn.Module) -> bool:
    """Whether ``model`` has FSDP2-sharded modules (every process must then run each forward)."""
    from torch.distributed.fsdp import FSDPModule

    return any(isinstance(m, FSDPModule) for m in model.modules())


class FSDPStrategy(ModelParallelStrategy):
    """FSDP2 over all ``num_nodes × devices`` processes; the method shards itself in ``configure_model``.

    Args:
        reshard_after_forward, param_dtype: see :func:`shard_`.
        reduce_every_micro_batch: with ``trainer.accumulate_grad_batches = k > 1``, reduce-scatter
            each micro-batch's gradients (``True``: the gradients stay sharded, the least memory)
            or only the sum, after the last micro-batch (``False``: 1/k of the gradient traffic;
            each process holds full unsharded gradients between micro-batches), see
            :meth:`block_backward_sync`.

    Checkpoints are ordinary ``.ckpt`` files with the full weights and optimiser state, gathered
    on rank 0 (CPU memory): ``jepa_zoo.eval``, ``export``, ``resume=auto`` and single-process runs
    read them as any other checkpoint.
    """

    def __init__(self, reshard_after_forward: bool = True, param_dtype: Optional[str] = None,
                 reduce_every_micro_batch: bool = True, **kwargs: Any) -> None:
        super().__init__(save_distributed_checkpoint=False, **kwargs)
        if param_dtype is not None and param_dtype not in PARAM_DTYPES:
            raise ValueError(f"fsdp.param_dtype must be one of {sorted(PARAM_DTYPES)} or null, got {param_dtype!r}")
        self.reshard_after_forward = reshard_after_forward
        self.param_dtype = param_dtype
        self.reduce_every_micro_batch = reduce_every_micro_batch

    @contextmanager
    def block_backward_sync(self) -> Iterator[None]:
        """Lightning runs the backward of every micro-batch but an accumulation's last inside this
        context (for DDP it is ``no_sync``).  With ``reduce_every_micro_batch=False`` the FSDP units
        keep those gradients unsharded and local (FSDP2's ``set_requires_gradient_sync(False)``);
        the last micro-batch's backward then reduce-scatters the accumulated sum once."""
        from torch.distributed.fsdp import FSDPModule

        units = [] if self.reduce_every_micro_batch else [
            m for m in self.lightning_module.modules() if isinstance(m, FSDPModule)]
        for u in units:
            u.set_requires_gradient_sync(False, recurse=False)
        try:
            yield
        finally:
            for u in units:
                u.set_requires_gradient_sync(True, recurse=False)

    def setup_environment(self) -> None:
        # all processes form one data-parallel (sharding) dimension; no tensor parallelism
        self._data_parallel_size = self.num_nodes * self.num_processes
        self._tensor_parallel_size = 1
        super().setup_environment()


def configure_model_(module: Any, compile: bool, strategy: Any) -> None:
    """What ``configure_model`` does for every jepa_zoo module: with ``compile``, compile its
    transformer blocks (``module.compile_()``, :mod:`jepa_zoo.models.compile`); then, under
    :class:`FSDPStrategy` (``trainer.strategy=fsdp``), shard its blocks and modules (:func:`shard_`)
    over the strategy's data-parallel mesh."""
    if compile:
        log.info("compile: %d modules compiled with torch.compile (the first steps compile them)",
                 len(module.compile_()))
    if not isinstance(strategy, FSDPStrategy):
        return
    mesh = module.device_mesh["data_parallel"]
    units = shard_(module, mesh, reshard_after_forward=strategy.reshard_after_forward, param_dtype=strategy.param_dtype)
    log.info("fsdp: %d modules sharded over %d processes (%s)", len(units), mesh.size(),
             ", ".join(u for u in units if "." not in u))
