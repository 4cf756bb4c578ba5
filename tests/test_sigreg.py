import math

import pytest
import torch

from jepa_zoo.losses.sigreg import SIGReg, collapse_value, epps_pulley, slice_directions


def naive_epps_pulley(x: torch.Tensor, t_max: float = 3.0, p: int = 17) -> torch.Tensor:
    """Direct transcription of the definition, one slice at a time, in float64."""
    x = x.double()
    n, k = x.shape
    dt = t_max / (p - 1)
    out = torch.zeros(k, dtype=torch.float64)
    for j in range(k):
        total = 0.0
        for i in range(p):
            t = i * dt
            c = torch.cos(t * x[:, j]).mean()
            s = torch.sin(t * x[:, j]).mean()
            err = (c - math.exp(-t * t / 2)) ** 2 + s**2
            w = (1.0 if i in (0, p - 1) else 2.0) * dt * math.exp(-t * t / 2)
            total += w * err
        out[j] = n * total
    return out


def test_matches_definition():
    torch.manual_seed(0)
    x = torch.randn(50, 7) * 1.3 + 0.2
    assert torch.allclose(epps_pulley(x).double(), naive_epps_pulley(x), rtol=1e-4, atol=1e-5)


def test_gaussian_null_value():
    torch.manual_seed(0)
    stat = epps_pulley(torch.randn(2048, 512))
    assert stat.shape == (512,)
    assert 0.9 < stat.mean().item() < 1.15  # official code: ~1.0-1.05


def test_collapse_value():
    n = 256
    stat = epps_pulley(torch.zeros(n, 3))
    assert torch.allclose(stat / n, torch.full((3,), 0.402), atol=5e-4)
    assert collapse_value() == pytest.approx(0.402, abs=5e-4)


def test_non_gaussian_is_larger():
    torch.manual_seed(0)
    assert epps_pulley(torch.rand(1024, 64) * 4).mean() > 20 * epps_pulley(torch.randn(1024, 64)).mean()


def test_leading_dims_and_shape_errors():
    x = torch.randn(3, 100, 5)
    assert epps_pulley(x).shape == (3, 5)
    assert torch.allclose(epps_pulley(x)[1], epps_pulley(x[1]))
    with pytest.raises(ValueError, match="N, K"):
        epps_pulley(torch.randn(10))
    with pytest.raises(ValueError, match="N, D"):
        SIGReg()(torch.randn(10), step=0)


def test_directions_unit_norm_and_deterministic():
    a = slice_directions(16, 32, seed=3, step=7)
    assert a.shape == (16, 32)
    assert torch.allclose(a.norm(dim=0), torch.ones(32), atol=1e-5)
    assert torch.equal(a, slice_directions(16, 32, seed=3, step=7))
    assert not torch.equal(a, slice_directions(16, 32, seed=3, step=8))
    assert not torch.equal(a, slice_directions(16, 32, seed=4, step=7))


def test_sigreg_resampled_per_step_and_reproducible():
    torch.manual_seed(0)
    z = torch.rand(128, 8)
    s = SIGReg(num_slices=16)
    assert s(z, 0) == s(z, 0)
    assert s(z, 0) != s(z, 1)


def test_bf16_autocast_computes_in_fp32():
    torch.manual_seed(0)
    z = torch.randn(256, 32)
    s = SIGReg(num_slices=64)
    ref = s(z, step=5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = s(z.bfloat16(), step=5)
    assert out.dtype == torch.float32
    # only the bf16 rounding of the inputs differs
    assert torch.allclose(out, ref, rtol=0.05)
    zb = z.bfloat16().float()
    assert torch.allclose(out, s(zb, step=5), rtol=1e-5)


def test_bf16_true_default_dtype_still_computes_in_fp32():
    """trainer.precision=bf16-true runs the step with bf16 as torch's default dtype: the
    directions and the sample count stay fp32 (before, the bf16 directions met fp32 embeddings)."""
    torch.manual_seed(0)
    z = torch.randn(256, 32).bfloat16()
    s = SIGReg(num_slices=64)
    ref = s(z, step=5)
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        out = s(z, step=5)
    finally:
        torch.set_default_dtype(old)
    assert out.dtype == torch.float32 and torch.equal(out, ref)


def test_gradient_pushes_towards_gaussian():
    torch.manual_seed(0)
    z = (torch.rand(512, 4) * 6 - 3).requires_grad_()
    s = SIGReg(num_slices=32)
    opt = torch.optim.SGD([z], lr=0.5)
    first = s(z, 0).item()
    for step in range(60):
        opt.zero_grad()
        loss = s(z, step)
        loss.backward()
        opt.step()
    assert s(z, 999).item() < 0.5 * first


def test_forward_without_step_uses_a_saved_counter():
    torch.manual_seed(0)
    z = torch.rand(64, 8)
    s = SIGReg(num_slices=16)
    first, second = s(z), s(z)
    assert first != second and int(s.calls) == 2
    assert first == SIGReg(num_slices=16)(z, step=0)
    assert "calls" in s.state_dict()


def test_local_statistic_ignores_process_group():
    x = torch.randn(32, 4)
    assert torch.equal(epps_pulley(x, distributed=False), epps_pulley(x))


def _direct_sums(x64: torch.Tensor, p: int, dt: float):
    xt = x64.unsqueeze(-1) * (torch.arange(p, dtype=torch.float64) * dt)
    return torch.cos(xt).sum(-3), torch.sin(xt).sum(-3)


def _rel(a: torch.Tensor, ref: torch.Tensor) -> float:
    return ((a.double() - ref).abs().max() / ref.abs().max()).item()


@pytest.mark.parametrize("p", [17, 10, 5])  # the α rows padded (17), the β rows padded (10, 5)
@pytest.mark.parametrize("chunk", [None, 3 * 512])  # one chunk; chunks of 3 slices, the last one of 1
def test_characteristic_sums_match_direct_cosines_and_sines(monkeypatch, p, chunk):
    """CharacteristicSums (the α/β factorisation, one batched product per chunk of slices) against
    cos/sin of every t_k·x in float64: forward and backward agree to 1e-6 relative in fp32."""
    from jepa_zoo.losses import sigreg

    if chunk is not None:
        monkeypatch.setitem(sigreg.CHUNK_SAMPLES, "cpu", chunk)
    torch.manual_seed(0)
    dt = 3.0 / (p - 1)
    x = (torch.randn(2, 512, 32) * 2).requires_grad_()
    c, s = sigreg.CharacteristicSums.apply(x, dt, p)
    x64 = x.detach().double().requires_grad_()
    c64, s64 = _direct_sums(x64, p, dt)
    assert c.shape == s.shape == (2, 32, p)
    assert _rel(c, c64) < 1e-6 and _rel(s, s64) < 1e-6
    gc, gs = torch.randn_like(c), torch.randn_like(s)
    (g,) = torch.autograd.grad((c * gc).sum() + (s * gs).sum(), x)
    (g64,) = torch.autograd.grad((c64 * gc.double()).sum() + (s64 * gs.double()).sum(), x64)
    assert _rel(g, g64) < 1e-5


def test_characteristic_sums_gradcheck():
    from jepa_zoo.losses.sigreg import CharacteristicSums

    v = torch.randn(2, 5, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda y: CharacteristicSums.apply(y, 0.25, 6), (v,))


def test_intra_op_threads_sets_and_restores():
    from jepa_zoo.losses.sigreg import intra_op_threads

    before = torch.get_num_threads()
    with intra_op_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with pytest.raises(RuntimeError, match="inside"):
        with intra_op_threads(1):
            raise RuntimeError("inside")
    assert torch.get_num_threads() == before
    with intra_op_threads(None):
        assert torch.get_num_threads() == before


def test_cpu_sums_run_on_the_requested_threads(monkeypatch):
    """Forward and backward run on ``cpu_threads`` intra-op threads (default 1), torch's own count
    is back afterwards, and the statistic and gradient do not depend on it."""
    from jepa_zoo.losses import sigreg

    seen = []
    real_bmm = torch.bmm

    def spy_bmm(*args, **kwargs):
        seen.append(torch.get_num_threads())
        return real_bmm(*args, **kwargs)

    outer = torch.get_num_threads()
    torch.set_num_threads(2)  # two even on a one-core runner, so that the two settings differ
    try:
        torch.manual_seed(0)
        z = torch.randn(256, 16)
        results = {}
        for threads in (1, None):
            zg = z.clone().requires_grad_()
            with monkeypatch.context() as m:
                m.setattr(torch, "bmm", spy_bmm)
                loss = SIGReg(num_slices=64, cpu_threads=threads)(zg, step=2)
                loss.backward()
            assert len(seen) == 2 and set(seen) == {1 if threads == 1 else 2}, (threads, seen)  # forward, backward
            assert torch.get_num_threads() == 2
            seen.clear()
            results[threads] = (loss.detach(), zg.grad)
    finally:
        torch.set_num_threads(outer)
    assert torch.allclose(results[1][0], results[None][0], rtol=1e-6)
    assert torch.allclose(results[1][1], results[None][1], rtol=1e-5, atol=1e-9)
