import json
import subprocess
import sys
from pathlib import Path

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


@pytest.mark.integration
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
        (path,) = ckpt.parent.glob(f"eval_knn_s*_{init}.json")  # knn.k=[5]: the settings hash keeps it apart
        results[init] = json.loads(path.read_text())
        assert results[init] == json.loads(e.stdout.strip().splitlines()[-1])  # the printed line is the record
        assert 0.0 <= results[init]["knn5_top1"] <= 100.0 and results[init]["train_images"] == 64
    # data settings without a data= group change the checkpoint's own dataset (its 64 fake images, not a
    # default dataset); a resolution keeps the record's name apart (_16px), another dataset size adds _on-<data>
    for settings, name, images in ((["+data.img_size=16"], "eval_knn_16px_s*_trained.json", 64),
                                   (["+data.img_size=16", "+data.fake_size=48"], "eval_knn_on-fake_16px_s*_trained.json", 48)):
        e = subprocess.run([sys.executable, "-m", "jepa_zoo.eval", f"ckpt={ckpt}", *settings, "knn.k=[5]",
                            f"hydra.run.dir={tmp_path}/eval_{len(settings)}"], cwd=REPO, capture_output=True, text=True,
                           timeout=600)
        assert e.returncode == 0, e.stderr[-3000:]
        (path,) = ckpt.parent.glob(name)
        record = json.loads(path.read_text())
        assert (record["img_size"], record["data"], record["train_images"]) == (16, "fake", images)
    # a smoke test with test_limit no longer replaces the full record; out= redirects; the path is logged
    before = {p.name: p.read_text() for p in ckpt.parent.glob("eval_*.json")}
    e = subprocess.run([sys.executable, "-m", "jepa_zoo.eval", f"ckpt={ckpt}", "test_limit=8", f"out={tmp_path}/rec",
                        f"hydra.run.dir={tmp_path}/eval_limit"], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert e.returncode == 0, e.stderr[-3000:]
    (path,) = (tmp_path / "rec").glob("*/eval_knn_test8_trained.json")  # out=: a folder per checkpoint
    assert path.parent.name.startswith(f"{tmp_path.name}-") and f"record: {path}" in e.stdout + e.stderr
    assert not [ln for ln in e.stderr.splitlines() if ln.startswith("INFO: ")]  # Lightning's lines once, not twice
    assert json.loads(path.read_text())["queries"] == 8
    assert {p.name: p.read_text() for p in ckpt.parent.glob("eval_*.json")} == before
    bad = subprocess.run([sys.executable, "-m", "jepa_zoo.eval", f"ckpt={ckpt}", "+data.nope=1"],
                         cwd=REPO, capture_output=True, text=True, timeout=600)
    out = bad.stdout + bad.stderr
    assert bad.returncode == 2 and "data.nope" in out and "Traceback" not in out, out[-2000:]
    bad = subprocess.run([sys.executable, "-m", "jepa_zoo.eval", f"ckpt={tmp_path}/nope.ckpt"],
                         cwd=REPO, capture_output=True, text=True, timeout=600)
    assert bad.returncode == 2 and "no such checkpoint" in bad.stdout + bad.stderr
    junk = tmp_path / "junk.ckpt"
    junk.write_text("not a checkpoint")
    bad = subprocess.run([sys.executable, "-m", "jepa_zoo.eval", f"ckpt={junk}"],
                         cwd=REPO, capture_output=True, text=True, timeout=600)
    out = bad.stdout + bad.stderr
    assert bad.returncode == 2 and "is not a PyTorch checkpoint" in out and "Traceback" not in out


def test_a_video_checkpoint_keeps_its_clips_on_other_video_data():
    """data=video_folder's 16 frames every 4 give way to the checkpoint's 8 every 2, unless the command
    sets them; image data and foreign weights' stand-in (fake) take no clip fields."""
    from dataclasses import replace

    from jepa_zoo.data.schema import DataConfig
    from jepa_zoo.eval import own_fields
    from jepa_zoo.pretrained import at_resolution

    own = DataConfig(name="video_folder", root="clips", num_frames=8, frame_step=2, img_size=64)
    group = DataConfig(name="video_folder", root="other", num_frames=16, frame_step=4, img_size=224)
    got = at_resolution(group, own)
    assert (got.num_frames, got.frame_step, got.img_size) == (8, 2, 64)
    kept = own_fields(["data=video_folder", "data.num_frames=4"])
    assert "num_frames" not in kept and {"frame_step", "fps", "img_size"} <= set(kept)
    got = at_resolution(replace(group, num_frames=4), own, kept)
    assert (got.num_frames, got.frame_step) == (4, 2)  # the command's frames, the checkpoint's spacing
    ckpt_at_fps = replace(own, fps=5)  # a spacing set with data.frame_step drops the checkpoint's fps too
    got = at_resolution(replace(group, frame_step=3), ckpt_at_fps, own_fields(["data.frame_step=3"]))
    assert (got.frame_step, got.fps, got.num_frames) == (3, None, 8)
    image = at_resolution(DataConfig(name="cifar10", root="cifar", num_frames=16), own)
    assert image.num_frames == 16 and image.img_size == 64
    assert at_resolution(group, DataConfig(name="fake", img_size=224)).num_frames == 16


def test_data_settings_are_checked_in_one_line_naming_the_key():
    from jepa_zoo.config import ConfigError
    from jepa_zoo.data.schema import DataConfig
    from jepa_zoo.pretrained import typed_data

    assert typed_data(DataConfig(), {"img_size": 24}).img_size == 24
    for settings, key in (({"nope": 1}, "data.nope"), ({"img_size": "big"}, "data.img_size"),
                          ({"img_size": -1}, "img_size")):
        with pytest.raises(ConfigError) as e:
            typed_data(DataConfig(), settings)
        message = str(e.value)
        assert key in message and "data.:" not in message and "\n" not in message, message
    from omegaconf import OmegaConf

    from jepa_zoo.eval import _data

    assert _data(OmegaConf.create({"data": {"img_size": 24}})) == (None, {"img_size": 24})  # settings alone
    with pytest.raises(ConfigError, match="^data: Interpolation key 'nope' not found$"):
        _data(OmegaConf.create({"data": {"root": "${nope}"}}))


def test_random_init_rebuilds_the_runs_initial_weights():
    from jepa_zoo.config import BackboneConfig, TrainConfig
    from jepa_zoo.methods.lejepa import LeJEPAConfig
    from jepa_zoo.methods import build_model

    cfg = TrainConfig(method=LeJEPAConfig(proj_hidden_dim=16, num_slices=8),
                      backbone=BackboneConfig(img_size=32, patch_size=8, kwargs={"depth": 1}), seed=3)
    a, b = build_model(cfg).state_dict(), build_model(cfg).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


class ToyTokens(torch.nn.Module):
    """A fixed 'encoder': an image [B, 3, 4, 4] becomes 4 tokens of 12 numbers."""

    embed_dim = 12

    def forward_tokens(self, x):
        return x.unfold(2, 2, 2).unfold(3, 2, 2).permute(0, 2, 3, 1, 4, 5).flatten(1, 2).flatten(2)


def toy_loaders(n=256, seed=0):
    from torch.utils.data import DataLoader, TensorDataset

    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 3, (n,), generator=g)
    x = torch.randn(n, 3, 4, 4, generator=g) * 0.5
    x[torch.arange(n), y, 0, 0] += 4.0  # the class picks the channel of one bright pixel
    return DataLoader(TensorDataset(x, y), batch_size=32, shuffle=True), DataLoader(TensorDataset(x, y), batch_size=64)


@pytest.mark.integration
@pytest.mark.parametrize("kind", ["linear", "attentive"])
def test_probe_grid_learns_a_separable_task(kind):
    import lightning as L

    from jepa_zoo.evaluation.probes import ProbeModule

    torch.manual_seed(0)
    probe = ProbeModule(ToyTokens(), 3, kind, lrs=[1e-2, 1e-6], wds=[0.0], num_heads=2)
    train_dl, val_dl = toy_loaders()
    trainer = L.Trainer(max_epochs=8, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, accelerator="cpu")
    trainer.fit(probe, train_dl)
    (scores,) = trainer.validate(probe, val_dl, verbose=False)
    res = probe.results(scores, scores)
    assert set(res["heads"]) == {"lr0.01_wd0", "lr1e-06_wd0"} and res["best_head"] == "lr0.01_wd0"
    assert res["top1"] > 90 and res["top5"] == 100  # percent; 3 classes: top-5 is top-3
    assert res["heads"]["lr1e-06_wd0"]["top1"] < 70  # a head with a useless LR has not learned it


def test_probe_head_is_chosen_on_the_held_out_split_not_on_the_test_set():
    from jepa_zoo.evaluation.probes import ProbeModule

    probe = ProbeModule(ToyTokens(), 3, "linear", lrs=[1e-2, 1e-3], wds=[0.0])
    a, b = probe.names
    select = {f"val/top1/{a}": 0.8, f"val/top1/{b}": 0.6, f"val/top5/{a}": 1.0, f"val/top5/{b}": 1.0}
    test = {f"val/top1/{a}": 0.5, f"val/top1/{b}": 0.7, f"val/top5/{a}": 0.9, f"val/top5/{b}": 1.0}
    res = probe.results(select, test)  # b is better on the test images, a on the held-out ones
    assert res["best_head"] == a and res["top1"] == pytest.approx(50.0) and res["top5"] == pytest.approx(90.0)
    assert res["select_top1"] == pytest.approx(80.0)
    assert res["heads"][b] == pytest.approx({"select_top1": 60.0, "top1": 70.0, "top5": 100.0})


@pytest.mark.integration
def test_eval_probes_and_predictor_finetuning_through_the_entry_point(tmp_path):
    r = train(tmp_path, "method=iwm", FAST[0], FAST[2], *FAST[6:], "method.pred_depth=2", "method.mrr.enabled=false")
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    ckpt = tmp_path / "checkpoints" / "last.ckpt"

    def evaluate(*args):
        return subprocess.run([sys.executable, "-m", "jepa_zoo.eval", f"ckpt={ckpt}", "probe.epochs=1",
                               "batch_size=16", "num_workers=0", f"hydra.run.dir={tmp_path}/ev", *args],
                              cwd=REPO, capture_output=True, text=True, timeout=600)

    e = evaluate("protocol=attentive", "features=predictor", "probe.lrs=[1e-3]", "probe.wds=[0.0,0.05]")
    assert e.returncode == 0, (e.stdout + e.stderr)[-3000:]
    res = json.loads(e.stdout.strip().splitlines()[-1])
    assert Path(res["file"]).name.startswith("eval_attentive_predictor_s")  # probe settings: hashed
    assert len(res["heads"]) == 2 and 0.0 <= res["top1"] <= res["top5"] <= 100.0 and res["features"] == "predictor"
    assert res["select_images"] == 6 and res["train_images"] == 58 and res["unit"] == "percent"  # 10 % held out
    e = evaluate("protocol=linear", "init=random")
    assert e.returncode == 0, (e.stdout + e.stderr)[-3000:]
    res = json.loads(e.stdout.strip().splitlines()[-1])
    assert len(res["heads"]) == 4 and res["train_images"] + res["select_images"] == 64
    e = evaluate("protocol=knn", "features=predictor")
    assert e.returncode == 2 and "features" in e.stdout + e.stderr
    e = evaluate("protocol=finetune", "finetune.epochs=1")
    assert e.returncode == 0, (e.stdout + e.stderr)[-3000:]
    res = json.loads(e.stdout.strip().splitlines()[-1])
    assert 0.0 <= res["top1"] <= res["top5"] <= 100.0 and res["train_images"] == 64

    # timm export of the same checkpoint: a stock timm model, strictly loaded, computes our features
    x = subprocess.run([sys.executable, "-m", "jepa_zoo.export", str(ckpt)], cwd=REPO, capture_output=True,
                       text=True, timeout=600)
    assert x.returncode == 0, (x.stdout + x.stderr)[-3000:]
    from jepa_zoo.eval import load_checkpoint
    from jepa_zoo.export import load_timm
    from jepa_zoo.methods import build_model

    timm_model = load_timm(ckpt.parent / "last_encoder.safetensors")
    assert type(timm_model).__module__.startswith("timm.")
    state = load_checkpoint(ckpt)
    from jepa_zoo.config import validate
    from omegaconf import OmegaConf

    hp = state["hyper_parameters"]
    model = build_model(validate(OmegaConf.create(hp["cfg"])), num_classes=hp.get("num_classes"))
    model.load_state_dict(state["state_dict"])
    images = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        ours, theirs = model.eval_encoder.eval()(images), timm_model(images)
    assert theirs.shape == ours.shape and torch.allclose(theirs, ours, atol=1e-5)
    assert not torch.allclose(theirs, model.backbone.eval()(images), atol=1e-5)  # the EMA target, not online


def test_export_refuses_a_cifar_stem_and_round_trips_a_resnet():
    from jepa_zoo.config import BackboneConfig
    from jepa_zoo.export import timm_export
    from jepa_zoo.models.backbones import build_backbone
    import timm

    with pytest.raises(ValueError, match="cifar_stem"):
        timm_export(build_backbone(BackboneConfig(name="resnet18", kind="timm", cifar_stem=True)))
    enc = build_backbone(BackboneConfig(name="resnet18", kind="timm")).eval()
    state, name, kwargs = timm_export(enc)
    stock = timm.create_model(name, **kwargs).eval()
    stock.load_state_dict(state)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(stock(x), enc(x), atol=1e-5)


@pytest.mark.integration
def test_finetune_trains_the_encoder_with_layer_decay():
    import lightning as L
    from torch.utils.data import DataLoader, TensorDataset

    from jepa_zoo.config import BackboneConfig
    from jepa_zoo.evaluation.finetune import FinetuneModule
    from jepa_zoo.models.backbones import build_backbone

    with pytest.raises(ValueError, match="layer_decay"):
        FinetuneModule(torch.nn.Linear(2, 2), num_classes=3, layer_decay=0.0)
    torch.manual_seed(0)
    enc = build_backbone(BackboneConfig(img_size=16, patch_size=4, kwargs={"depth": 2}))
    before = {k: v.clone() for k, v in enc.state_dict().items()}
    y = torch.randint(0, 3, (64,))
    x = torch.randn(64, 3, 16, 16) * 0.5
    x[torch.arange(64), y] += 2.0
    module = FinetuneModule(enc, num_classes=3, lr=1e-2, layer_decay=0.5)
    trainer = L.Trainer(max_steps=6, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, num_sanity_val_steps=0)
    trainer.fit(module, DataLoader(TensorDataset(x, y), batch_size=16, shuffle=True),
                DataLoader(TensorDataset(x, y), batch_size=64))
    lr_of = {id(p): g["initial_lr"] for g in trainer.optimizers[0].param_groups for p in g["params"]}
    stem, first, last, head = (lr_of[id(p)] for p in (enc.model.patch_embed.proj.weight,
                                                       enc.model.blocks[0].mlp.fc1.weight,
                                                       enc.model.blocks[1].mlp.fc1.weight, module.head.fc.weight))
    assert (stem, first, last, head) == pytest.approx((0.25e-2, 0.5e-2, 1e-2, 1e-2))  # lr * 0.5^(L - l)
    assert all(not torch.equal(before[k], v) for k, v in enc.state_dict().items() if v.is_floating_point())
    res = module.results(trainer.validate(module, DataLoader(TensorDataset(x, y), batch_size=64), verbose=False)[0])
    assert 0.0 <= res["top1"] <= res["top5"] <= 100.0
