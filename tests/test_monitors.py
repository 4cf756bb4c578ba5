"""Online monitors: RankMe / embedding statistics, the online kNN queue, and their callbacks."""

import math
from types import SimpleNamespace

import pytest
import torch
from lightning.pytorch.plugins.precision import Precision

from jepa_zoo.callbacks.monitors import EmbeddingMonitor, OnlineKNN, gather_rows
from jepa_zoo.config import ConfigError, MonitorsConfig
from jepa_zoo.data.batch import Batch
from jepa_zoo.evaluation.rankme import embedding_stats, rankme, token_spread

from test_train_entry import FAST, read_metrics, train


def _orthonormal(n: int, r: int, seed: int) -> torch.Tensor:
    q, _ = torch.linalg.qr(torch.randn(n, r, generator=torch.Generator().manual_seed(seed), dtype=torch.float64))
    return q


# -- RankMe and embedding statistics ---------------------------------------------------------------
@pytest.mark.parametrize("r", [1, 3, 10])
def test_rankme_of_equal_singular_values_is_the_rank(r):
    z = _orthonormal(200, r, 0) @ (3.0 * _orthonormal(32, r, 1).T)  # rank r, all σ = 3
    assert rankme(z) == pytest.approx(r, abs=1e-3)


def test_rankme_is_the_exp_entropy_of_normalised_singular_values():
    z = torch.diag(torch.tensor([3.0, 1.0, 0.0]))  # p = (3/4, 1/4, 0)
    expected = math.exp(-(0.75 * math.log(0.75) + 0.25 * math.log(0.25)))  # 1.7548...
    assert rankme(z) == pytest.approx(expected, abs=1e-5)
    assert rankme(torch.cat([z, z])) == pytest.approx(expected, abs=1e-5)  # N does not matter, only σ ratios


def test_rankme_of_isotropic_gaussian_is_near_full_and_of_collapse_near_one():
    g = torch.Generator().manual_seed(0)
    assert 0.95 * 32 < rankme(torch.randn(4096, 32, generator=g)) <= 32
    collapsed = torch.randn(512, 1, generator=g) @ torch.randn(1, 32, generator=g)  # rank 1
    assert rankme(collapsed) == pytest.approx(1.0, abs=1e-3)
    assert rankme(torch.zeros(8, 4)) == 0.0
    with pytest.raises(ValueError, match=r"\[N, D\]"):
        rankme(torch.randn(5))


def test_embedding_stats_collapse_isotropy_and_one_direction():
    g = torch.Generator().manual_seed(0)
    const = embedding_stats(torch.full((64, 16), 0.3) + torch.arange(16.0))
    assert const["std"] == pytest.approx(0.0, abs=1e-12) and const["isotropy"] == 0.0

    iso = embedding_stats(torch.randn(8192, 32, generator=g))
    assert iso["std"] == pytest.approx(1 / math.sqrt(32), rel=0.03)
    assert iso["isotropy"] > 0.95

    one_dir = torch.randn(256, 1, generator=g) * torch.randn(1, 32, generator=g)  # u_i = ±v
    assert embedding_stats(one_dir)["isotropy"] == pytest.approx(1 / 32, rel=1e-6)
    with pytest.raises(ValueError):
        embedding_stats(torch.randn(1, 8))


def test_isotropy_is_the_normalised_participation_ratio_of_the_covariance():
    z = torch.randn(300, 8, generator=torch.Generator().manual_seed(3), dtype=torch.float64) * torch.arange(1.0, 9.0)
    u = torch.nn.functional.normalize(z, dim=1)
    lam = torch.linalg.eigvalsh(torch.cov(u.T))
    expected = float(lam.sum() ** 2 / (8 * (lam**2).sum()))
    assert embedding_stats(z)["isotropy"] == pytest.approx(expected, rel=1e-9)
    assert embedding_stats(z[:5])["isotropy"] == pytest.approx(  # N < D: the N x N Gram path
        float(torch.linalg.eigvalsh(torch.cov(u[:5].T)).sum() ** 2
              / (8 * (torch.linalg.eigvalsh(torch.cov(u[:5].T)) ** 2).sum())), rel=1e-9)


# -- online kNN --------------------------------------------------------------------------------------
def _clusters(n: int, seed: int, classes: int = 5, dim: int = 16, noise: float = 0.3):
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(classes, dim, generator=torch.Generator().manual_seed(99)) * 3
    y = torch.randint(0, classes, (n,), generator=g)
    return centres[y] + noise * torch.randn(n, dim, generator=g), y


def test_token_spread_splits_shared_position_and_content():
    torch.manual_seed(0)
    b, n, d = 64, 16, 32
    shared = torch.zeros(d)
    shared[0] = 3.0  # ‖μ‖² = 9
    position = torch.zeros(n, d)
    position[:, 1] = torch.linspace(-1, 1, n)  # a position code along one axis, mean 0
    content = torch.zeros(b, n, d)
    content[..., 2:6] = torch.randn(b, n, 4)  # content in 4 directions
    content -= content.mean(0)  # exactly zero mean over samples, so the shares are exact
    s = token_spread(shared + position + content)
    total = 9.0 + position.square().sum(-1).mean() + content.square().sum(-1).mean()
    assert s["shared"] == pytest.approx(9.0 / total)
    assert s["position"] == pytest.approx(float(position.square().sum(-1).mean() / total))
    assert s["shared"] + s["position"] + s["content"] == pytest.approx(1.0)
    assert 3.5 < s["content_rank"] <= 4.0  # the content's 4 directions, whatever the shared one does
    # growing the shared direction lowers the pooled RankMe but leaves the content rank alone
    louder = token_spread(10 * shared + position + content)
    assert louder["shared"] > 0.9 and louder["content_rank"] == pytest.approx(s["content_rank"])
    assert rankme((10 * shared + position + content).mean(1)) < rankme((shared + position + content).mean(1))
    with pytest.raises(ValueError, match="B >= 2"):
        token_spread(torch.zeros(1, 4, 8))


def test_online_knn_classifies_separable_features_and_keeps_the_newest():
    knn = OnlineKNN(queue_size=256, k=10)
    x, y = _clusters(600, seed=0)
    for xb, yb in zip(x.split(32), y.split(32)):
        knn.push(xb, yb)
    assert knn.filled == 256
    feats, labels = knn.entries()
    assert torch.equal(labels, y[-256:])  # oldest first, the newest 256
    assert torch.allclose(feats.norm(dim=1), torch.ones(256))
    q, qy = _clusters(200, seed=1)
    correct, scored = knn.hits(q, qy)
    assert scored == 200 and correct / scored > 0.95
    # shuffled labels in the queue: chance level, so the test above measures the features
    shuffled = OnlineKNN(queue_size=256, k=10)
    shuffled.push(feats, labels[torch.randperm(256, generator=torch.Generator().manual_seed(0))])
    assert shuffled.hits(q, qy)[0] / 200 < 0.5


def test_online_knn_state_dict_round_trips_and_resizes():
    knn = OnlineKNN(queue_size=64)
    x, y = _clusters(150, seed=0)
    knn.push(x[:100], y[:100])
    knn.push(x[100:], y[100:])  # wraps: ptr is mid-queue
    state = knn.state_dict()
    assert state["features"].shape == (64, 16) and torch.equal(state["labels"], y[-64:])

    restored = OnlineKNN(queue_size=64)
    restored.load_state_dict(state)
    for a, b in zip(restored.state_dict().values(), state.values()):
        assert torch.allclose(a.float(), b.float())
    q, qy = _clusters(50, seed=1)
    assert restored.hits(q, qy) == knn.hits(q, qy)

    smaller = OnlineKNN(queue_size=16)
    smaller.load_state_dict(state)
    assert torch.equal(smaller.entries()[1], y[-16:])
    empty = OnlineKNN()
    empty.load_state_dict(OnlineKNN().state_dict())
    assert empty.filled == 0 and empty.hits(q, qy) == (0, 0)


def _fake_run(callback, batches, encoder=torch.nn.Identity()):
    """Drive a monitor's validation hooks as Lightning would (one process); returns what it logged."""
    logged = {}
    trainer = SimpleNamespace(sanity_checking=False, world_size=1, precision_plugin=Precision(),
                              strategy=SimpleNamespace(reduce=lambda t, reduce_op: t))
    module = SimpleNamespace(eval_encoder=encoder, device=torch.device("cpu"), all_gather=None,
                             log=lambda name, value, **kw: logged.__setitem__(name, value))
    callback.on_validation_epoch_start(trainer, module)
    for i, (images, labels) in enumerate(batches):
        callback.on_validation_batch_end(trainer, module, None, Batch(images, labels), i)
    callback.on_validation_epoch_end(trainer, module)
    return logged


def test_knn_callback_logs_accuracy_and_nothing_for_unlabelled_data():
    x, y = _clusters(300, seed=0)
    knn = OnlineKNN(queue_size=256, k=10, max_images=40)
    module = SimpleNamespace(last_step_output=SimpleNamespace(features=x, labels=y))
    knn.on_train_batch_end(None, module, None, None, 0)
    q, qy = _clusters(64, seed=1)
    qy[40:] = (qy[40:] + 1) % 5  # wrong labels past max_images: scoring them would lower the accuracy
    logged = _fake_run(knn, zip(q.split(16), qy.split(16)))
    correct, scored = knn.hits(q[:40], qy[:40])
    assert scored == 40 and correct >= 38
    assert logged == {"val/knn_top1": pytest.approx(100 * correct / 40)}  # percent, as every accuracy

    unlabelled = OnlineKNN(queue_size=64)
    unlabelled.push(x, torch.full_like(y, -1))
    assert _fake_run(unlabelled, [(q, qy)]) == {}
    assert _fake_run(knn, [(q, torch.full_like(qy, -1))]) == {}


def test_embedding_monitor_logs_rankme_std_isotropy_of_eval_encoder_features():
    g = torch.Generator().manual_seed(0)
    images = torch.randn(100, 8, generator=g)
    encoder = torch.nn.Linear(8, 8, bias=False)
    with torch.no_grad():
        encoder.weight.copy_(torch.diag(torch.tensor([1.0, 1, 1, 0, 0, 0, 0, 0])))  # rank 3
    logged = _fake_run(EmbeddingMonitor(max_images=64), [(b, torch.zeros(len(b))) for b in images.split(30)],
                       encoder)
    assert set(logged) == {"val/rankme", "val/emb_std", "val/isotropy"}
    z = encoder(images[:64]).detach()
    assert logged["val/rankme"] == pytest.approx(rankme(z)) and 2 < logged["val/rankme"] < 3.01
    assert logged["val/emb_std"] == pytest.approx(embedding_stats(z)["std"])
    assert logged["val/isotropy"] < 3 / 8 + 1e-6


def test_gather_rows_pads_unequal_ranks_and_keeps_rank_order():
    other = torch.full((3, 4), 7.0)  # rank 1's rows

    def all_gather(t):  # what two processes' all_gather would return on rank 0
        if t.dim() == 0:
            return torch.tensor([int(t), other.shape[0]])
        pad = torch.cat([other, other.new_zeros(t.shape[0] - other.shape[0], 4)]) if t.shape[0] > 3 else other
        assert pad.shape == t.shape  # all_gather needs equal shapes
        return torch.stack([t, pad])

    mine = torch.arange(20.0).view(5, 4)
    assert torch.equal(gather_rows(mine, all_gather, 2), torch.cat([mine, other]))
    assert torch.equal(gather_rows(mine[:3], all_gather, 2), torch.cat([mine[:3], other]))
    assert gather_rows(mine, None, 1) is mine


def test_monitors_config_is_checked():
    with pytest.raises(ConfigError, match="monitors.knn_k"):
        MonitorsConfig(knn_k=0)
    with pytest.raises(ConfigError, match="monitors.max_images"):
        MonitorsConfig(max_images=1)
    from jepa_zoo.callbacks.assemble import monitors

    cfg = SimpleNamespace(monitors=MonitorsConfig(rankme=False, knn_queue=10))
    (only,) = monitors(cfg)
    assert isinstance(only, OnlineKNN) and only.queue_size == 10


# -- the real entry point --------------------------------------------------------------------------------
@pytest.mark.integration
def test_monitors_log_through_the_entry_point_and_the_queue_is_checkpointed(tmp_path):
    assert "trainer.max_steps=4" in FAST and "data=fake" in FAST
    r = train(tmp_path, *FAST, "monitors.knn_queue=100")
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    rows = read_metrics(tmp_path)
    vals = {k: [float(row[k]) for row in rows if row.get(k)] for k in
            ("val/rankme", "val/emb_std", "val/isotropy", "val/knn_top1")}
    assert all(len(v) == 1 for v in vals.values()), vals  # one validation run (one epoch)
    assert 1 <= vals["val/rankme"][0] <= 16  # at most the 16 fake validation images
    assert 0 < vals["val/emb_std"][0] < 1 and 0 < vals["val/isotropy"][0] <= 1
    assert 0 <= vals["val/knn_top1"][0] <= 100
    ckpt = torch.load(tmp_path / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    state = ckpt["callbacks"]["OnlineKNN"]
    assert state["features"].shape[0] == 100 and state["labels"].min() >= 0  # 4 steps x 2 views x 16 > 100


@pytest.mark.integration
def test_the_end_of_training_compares_the_encoder_with_its_initialisation(tmp_path):
    """monitors.final_knn: the trained encoder and the same encoder rebuilt at its seeded init, one
    kNN each on the same images, as a log table and as final/knn_trained, final/knn_init."""
    import json
    import re
    import subprocess
    import sys

    from conftest import REPO

    r = train(tmp_path, *FAST, "monitors.final_knn=1000")  # more than the fake data has: all of it
    assert r.returncode == 0, r.stderr[-3000:]
    log = (tmp_path / "train.log").read_text()
    assert re.search(r"trained vs its initialisation: kNN@20 top-1 of \d+ test images against \d+ training", log)
    assert re.search(r"random init +[\d.]+ %", log)
    rows = [x for x in read_metrics(tmp_path) if x.get("final/knn_init")]
    assert len(rows) == 1 and rows[0].get("final/knn_trained")
    summary = json.loads((tmp_path / "run_summary.json").read_text())["metrics"]  # the answer is in the summary
    assert summary["final/knn_init"] == pytest.approx(float(rows[0]["final/knn_init"]))
    assert summary["final/knn_trained"] == pytest.approx(float(rows[0]["final/knn_trained"]))
    assert re.search(r"final metrics \(step \d+\):\n(  .*\n)*  final/knn_trained +[\d.]+\n", log)  # and in the last lines
    from jepa_zoo.report import load_run, select_metrics

    assert {"final/knn_trained", "final/knn_init"} <= set(select_metrics([load_run(tmp_path, tmp_path.parent)]))
    # the "init" row is the encoder python -m jepa_zoo.eval init=random rebuilds: same images, same score
    e = subprocess.run([sys.executable, "-m", "jepa_zoo.eval", f"ckpt={tmp_path / 'checkpoints' / 'last.ckpt'}",
                        "init=random", "knn.k=[20]", "num_workers=0", f"hydra.run.dir={tmp_path}/ev"],
                       cwd=REPO, capture_output=True, text=True, timeout=600)
    assert e.returncode == 0, e.stderr[-2000:]
    random_all = json.loads(e.stdout.strip().splitlines()[-1])["knn20_top1"]
    assert float(rows[0]["final/knn_init"]) == pytest.approx(random_all, abs=1e-4)


def test_the_initial_encoder_compared_is_the_seeded_initialisation(compose_cfg, monkeypatch):
    """TrainedVsInit extracts with the module's own (trained) eval encoder and with an encoder equal
    to the one build_model rebuilds from the config and seed, not with the current weights."""
    from types import SimpleNamespace


    from jepa_zoo.callbacks.learned import TrainedVsInit
    from jepa_zoo.config import validate
    from jepa_zoo.evaluation import features
    from jepa_zoo.methods import build_model

    cfg = validate(compose_cfg(*FAST, "data.fake_size=64"))
    model = build_model(cfg)
    with torch.no_grad():  # "training" moved the weights away from their initialisation
        for p in model.eval_encoder.parameters():
            p.add_(torch.randn_like(p))
    seen = []
    real_init = features.FeatureCache.__init__

    def record(self, encoder, *args, **kwargs):
        seen.append(encoder)
        real_init(self, encoder, *args, **kwargs)

    monkeypatch.setattr(features.FeatureCache, "__init__", record)
    logged = {}
    trainer = SimpleNamespace(global_rank=0, global_step=7, received_sigterm=False, loggers=[SimpleNamespace(
        log_metrics=lambda metrics, step: logged.update(metrics))])
    TrainedVsInit(images=32).on_train_end(trainer, model)
    assert seen[0] is model.eval_encoder and set(logged) == {"final/knn_trained", "final/knn_init"}
    fresh = build_model(cfg).eval_encoder.state_dict()
    init = seen[1].state_dict()
    assert fresh.keys() == init.keys() and all(torch.equal(fresh[k], init[k]) for k in fresh)
    assert not torch.equal(seen[0].state_dict()[next(iter(fresh))], fresh[next(iter(fresh))])
