"""No host reads of tensors inside a training step between logging steps.

On a GPU every ``.item()``, ``bool(t)``, ``float(t)``, ``.tolist()``, ``.numpy()`` or ``.cpu()``
of a device tensor waits for the queued kernels.  ``torch.cuda.set_sync_debug_mode`` catches
those on a GPU only, so here (CPU) the same calls are intercepted on ``torch.Tensor`` from the
start of a non-logging training batch to the end of its last ``on_train_batch_end`` hook:
forward, backward, the non-finite check, the optimiser, the EMA update, the monitors'
queue updates and the perf monitor.  The positive control refreshes the progress bar every
step, whose metric conversions Lightning does with ``.item()``: the probe must see them.
"""

import collections
import traceback

import lightning as L
import pytest
import torch

from test_ddp import METHOD

READS = ("item", "tolist", "__bool__", "__float__", "__int__", "__index__", "numpy", "cpu")


class HostReadProbe(L.Callback):
    """Counts host reads of tensors by call site during non-logging training batches."""

    def __init__(self) -> None:
        self.hits: collections.Counter = collections.Counter()
        self.probed_steps = 0
        self._orig = {n: getattr(torch.Tensor, n) for n in READS}

    def _wrap(self, name: str):
        orig, hits = self._orig[name], self.hits

        def read(t, *args, **kwargs):
            frame = traceback.extract_stack(limit=2)[0]  # the caller
            hits[f"{name} at {frame.filename}:{frame.lineno}"] += 1
            return orig(t, *args, **kwargs)

        return read

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        # step 0 counts FLOPs and allocates the optimiser state: a one-off, not the steady state
        if trainer.global_step >= 1 and not trainer._logger_connector.should_update_logs:
            self.probed_steps += 1
            for n in READS:
                setattr(torch.Tensor, n, self._wrap(n))

    def stop(self) -> None:
        for n, f in self._orig.items():
            setattr(torch.Tensor, n, f)


def fit_with_probe(monkeypatch, compose_cfg, *overrides: str) -> HostReadProbe:
    import jepa_zoo.callbacks.assemble as assemble
    import jepa_zoo.train as train
    from jepa_zoo.methods.base import JEPAModule

    probe = HostReadProbe()
    build = assemble.training_callbacks
    monkeypatch.setattr(assemble, "training_callbacks", lambda *args: [probe, *build(*args)])
    end = JEPAModule.on_train_batch_end  # the module's hook runs after every callback's

    def end_then_stop(self, *args):
        try:
            end(self, *args)
        finally:
            probe.stop()

    monkeypatch.setattr(JEPAModule, "on_train_batch_end", end_then_stop)
    try:
        train.run(compose_cfg("data=fake", "+backbone.kwargs.depth=2", "trainer.max_steps=8",
                              "trainer.log_every_n_steps=4", "trainer.enable_model_summary=false", *overrides))
    finally:
        probe.stop()
    return probe


ARGS = {**METHOD, "iwm": ["method=iwm", "method.pred_depth=1", "method.mrr.enabled=false"],
        "lejepa-photometric-on-device": [*METHOD["lejepa"], "method.views.photometric=device"],
        "lejepa-crops-on-device": [*METHOD["lejepa"], "method.views.photometric=device", "method.views.crops=device"],
        "iwm-photometric-on-device": ["method=iwm", "method.pred_depth=1", "method.mrr.enabled=false",
                                      "method.views.photometric=device"]}


@pytest.mark.integration
@pytest.mark.parametrize("method", sorted(ARGS))
def test_no_host_reads_between_logging_steps(monkeypatch, compose_cfg, method):
    args = ARGS[method]
    probe = fit_with_probe(monkeypatch, compose_cfg, *args, "progress_every_n_steps=4", "nonfinite_loss=skip")
    assert probe.probed_steps >= 4
    assert not probe.hits, dict(probe.hits)


@pytest.mark.integration
def test_the_probe_sees_the_progress_bar_reads(monkeypatch, compose_cfg):
    probe = fit_with_probe(monkeypatch, compose_cfg, *METHOD["ijepa"], "progress_every_n_steps=1")
    assert probe.probed_steps >= 4 and sum(probe.hits.values()) >= probe.probed_steps, dict(probe.hits)
