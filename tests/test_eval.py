import json
import os
import subprocess
import sys

import pytest
import torch

from jepa_zoo.evaluation.knn import knn_accuracy, knn_scores

from conftest import REPO
from test_train_entry import FAST, train


def test_knn_on_constructed_clusters():
    # two well separated clusters: every query's neighbours share its label
    bank = torch.cat([torch.randn(50, 4) * 0.1 + torch.tensor([5.0, 0, 0, 0]),
                      torch.randn(50, 4) * 0.1 + torch.tensor([0, 5.0, 0, 0])])
    labels = torch.tensor([0] * 50 + [1] * 50)
    queries = torch.tensor([[4.0, 0.1, 0, 0], [0.2, 3.0, 0, 0]])
    res = knn_accuracy(bank, labels, queries, torch.tensor([0, 1]), ks=(5,))
    assert res["knn5_top1"] == 100.0
    res = knn_accuracy(bank, labels, queries, torch.tensor([1, 0]), ks=(5,))
    assert res["knn5_top1"] == 0.0


def test_knn_weights_follow_similarity():
    bank = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    scores = knn_scores(bank, torch.tensor([0, 1, 1]), torch.tensor([[1.0, 0.2]]), k=3, temperature=0.07,
                        num_classes=2)
    assert scores[0, 0] > scores[0, 1]  # the one very close neighbour outweighs two far ones


@pytest.mark.slow
def test_eval_entry_point_trained_and_random(tmp_path):
    r = train(tmp_path, *FAST)
    assert r.returncode == 0, r.stderr[-3000:]
    ckpt = tmp_path / "checkpoints" / "last.ckpt"
    results = {}
    for init in ("trained", "random"):
        e = subprocess.run([sys.executable, "-m", "jepa_zoo.eval", f"ckpt={ckpt}", f"init={init}",
                            "knn.k=[5]", f"hydra.run.dir={tmp_path}/eval_{init}"],
                           cwd=REPO, capture_output=True, text=True, timeout=600)
        assert e.returncode == 0, e.stderr[-3000:]
        results[init] = json.loads((ckpt.parent / f"eval_knn_{init}.json").read_text())
        assert 0.0 <= results[init]["knn5_top1"] <= 100.0 and results[init]["bank"] == 64
    bad = subprocess.run([sys.executable, "-m", "jepa_zoo.eval", f"ckpt={tmp_path}/nope.ckpt"],
                         cwd=REPO, capture_output=True, text=True, timeout=600)
    assert bad.returncode == 2 and "no such checkpoint" in bad.stdout + bad.stderr
    junk = tmp_path / "junk.ckpt"
    junk.write_text("not a checkpoint")
    bad = subprocess.run([sys.executable, "-m", "jepa_zoo.eval", f"ckpt={junk}"],
                         cwd=REPO, capture_output=True, text=True, timeout=600)
    out = bad.stdout + bad.stderr
    assert bad.returncode == 2 and "not a readable PyTorch checkpoint" in out and "Traceback" not in out


def test_random_init_rebuilds_the_runs_initial_weights():
    from jepa_zoo.config import BackboneConfig, LeJEPAConfig, TrainConfig
    from jepa_zoo.methods import build_model

    cfg = TrainConfig(method=LeJEPAConfig(proj_hidden_dim=16, num_slices=8),
                      backbone=BackboneConfig(img_size=32, patch_size=8, kwargs={"depth": 1}), seed=3)
    a, b = build_model(cfg).state_dict(), build_model(cfg).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
