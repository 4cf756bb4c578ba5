import pytest
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from jepa_zoo.config import ConfigError, TrainConfig, validate
from jepa_zoo.methods.lejepa import LeJEPAConfig
from jepa_zoo.registry import builtin_methods

from conftest import CONF_DIR


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


GROUP_EXTRAS = {("backbone", "timm"): ["backbone.name=convnext_atto"]}


def refusal(method: str, group: str, option: str, tc_raw) -> str | None:
    """What validating ``method`` with ``group=option`` must refuse (a word of the message), derived from
    the method's MethodSpec (its maskings and their grids, clips or images) and the composed option."""
    from jepa_zoo.data.schema import VIDEO_DATA
    from jepa_zoo.masks.schema import MASKINGS
    from jepa_zoo.registry import method_spec

    spec = method_spec(method)
    grids = {MASKINGS[m].grid for m in spec.maskings}
    if group == "masking" and option not in spec.maskings:
        return "masking"
    if group == "data" and (tc_raw.data.name in VIDEO_DATA) != spec.video:
        return "needs video" if spec.video else "trains on images"
    if group == "backbone" and tc_raw.backbone.kind != "vit":
        return "video ViT" if "clip" in grids else "ViT backbone" if "image" in grids else None
    return None


def preset_module(preset: str) -> str:
    """The method a ``conf/method/<preset>.yaml`` selects (its ``name``, through its defaults)."""
    import yaml

    data = yaml.safe_load((CONF_DIR / "method" / f"{preset}.yaml").read_text()) or {}
    if "name" in data or "method" in data:
        return data.get("name") or data["method"]["name"]
    parents = [d for d in data.get("defaults", []) if isinstance(d, str) and d != "_self_" and not d.startswith("/")]
    if parents:
        return preset_module(parents[0])
    schema = next(d for d in data.get("defaults", []) if isinstance(d, str) and d.startswith("/schema/method/"))
    return schema.split("/")[3].split("@")[0]


def default_data(method: str) -> list[str]:
    """A video method composes with clips unless the data group is the one tested."""
    from jepa_zoo.registry import method_spec

    return ["data=moving_shapes"] if method_spec(method).video else []


def test_every_group_has_options():
    for group in ("method", "backbone", "masking", "data", "hardware", "logger", "experiment", "collapse"):
        assert options(group), group
    assert {"vit_t", "vit_s", "vit_b", "vit_l", "vit_h", "resnet18", "resnet50", "timm"} <= set(options("backbone"))
    assert {"cpu", "gpu", "gpu_bf16", "multinode"} <= set(options("hardware"))
    assert {"csv", "tensorboard", "wandb"} <= set(options("logger"))


@pytest.mark.parametrize("method", options("method"))  # every preset yaml, over its module
@pytest.mark.parametrize(
    "group,option",
    [(g, o) for g in ("backbone", "masking", "data", "collapse") for o in options(g)],
)
def test_every_group_option_composes_with_every_method(compose_cfg, method, group, option):
    from jepa_zoo.registry import method_spec

    extra = GROUP_EXTRAS.get((group, option), [])
    name = preset_module(method)  # the module a preset (vjepa2, iwm_inv) is a yaml over
    chosen = [f"method={method}"] + (default_data(name) if group != "data" else [])
    cfg = compose_cfg(*chosen, f"{group}={option}", "data.root=/nonexistent", *extra)
    refused = refusal(name, group, option, cfg)
    if group == "collapse" and option != "default" and option not in method_spec(name).collapses:
        refused = "collapse"
    if refused:
        with pytest.raises(ConfigError, match=refused):
            validate(cfg)
        return
    tc = validate(cfg)
    assert isinstance(tc, TrainConfig) and tc.method.name == name


@pytest.mark.parametrize("group,option", [(g, o) for g in ("hardware", "logger") for o in options(g)])
def test_every_method_independent_option_composes(compose_cfg, group, option):
    """Hardware and loggers set no method's keys: each once, with the default method."""
    assert isinstance(validate(compose_cfg(f"{group}={option}", "data.root=/nonexistent")), TrainConfig)


@pytest.mark.parametrize("experiment", options("experiment"))
def test_every_experiment_composes(compose_cfg, experiment):
    """Each experiment once: it chooses its method."""
    tc = validate(compose_cfg(f"experiment={experiment}", "data.root=/nonexistent"))
    assert isinstance(tc, TrainConfig)


def test_default_is_lejepa_paper_recipe(compose_cfg):
    tc = validate(compose_cfg("data.root=/x"))
    m = tc.method
    assert isinstance(m, LeJEPAConfig)
    assert (m.lambd, m.proj_dim, m.num_slices, m.t_max, m.num_points) == (0.05, 64, 1024, 3.0, 17)
    assert (m.views.num_global, m.views.num_local) == (2, 6)
    assert m.views.global_scale == [0.3, 1.0] and m.views.local_scale == [0.05, 0.3]
    assert m.views.jitter == [0.4, 0.4, 0.2, 0.1]


def test_ijepa_defaults_follow_the_paper(compose_cfg):
    tc = validate(compose_cfg("method=ijepa", "data.root=/x"))
    assert tc.masking.name == "multiblock" and tc.masking.num_targets == 4
    assert tc.masking.target_scale == [0.15, 0.2] and tc.masking.context_scale == [0.85, 1.0]
    o = tc.method.optim
    assert (o.lr, o.lr * o.warmup_start_ratio, o.lr * o.final_lr_ratio) == pytest.approx((1e-3, 2e-4, 1e-6))
    assert (o.weight_decay, o.final_weight_decay, o.warmup_epochs) == (0.04, 0.4, 40)
    assert tc.method.ema == [0.996, 1.0] and tc.method.loss == "smooth_l1"
    assert (tc.method.pred_depth, tc.method.pred_dim) == (12, 384)
    tc = validate(compose_cfg("experiment=ijepa_vith14_in1k", "data.root=/x"))
    assert tc.backbone.name == "vit_huge_patch14_224" and tc.backbone.patch_size == 14
    assert tc.data.batch_size * tc.trainer["devices"] * tc.trainer["num_nodes"] == 2048
    assert tc.trainer["max_epochs"] == 300 and tc.trainer["precision"] == "bf16-mixed"


def test_cifar10_gives_vits_an_8x8_grid(compose_cfg):
    tc = validate(compose_cfg("method=ijepa", "backbone=vit_t", "data=cifar10", "data.root=/x"))
    assert tc.backbone.img_size // tc.backbone.patch_size == 8
    with pytest.raises(ConfigError, match="too small"):
        validate(compose_cfg("method=ijepa", "data=cifar10", "data.root=/x", "backbone.patch_size=16"))


def test_vit_b_command_line(compose_cfg):
    tc = validate(compose_cfg("method=lejepa", "backbone=vit_b", "data=imagenet", "data.root=/x"))
    assert tc.backbone.name == "vit_base_patch16_224" and tc.backbone.img_size == 224
    tc = validate(compose_cfg("backbone=vit_b", "backbone.patch_size=8", "data=fake", "data.img_size=128"))
    assert tc.backbone.patch_size == 8 and tc.backbone.img_size == 128


@pytest.mark.parametrize(
    "override,key",
    [
        ("+method.lamda=0.1", "method.lamda"),
        ("method.lambd=2.0", "method.lambd"),
        ("data.batch_size=0", "data.batch_size"),
        ("+trainer.max_stepz=3", "trainer.max_stepz"),
        ("backbone.patch_size=5", "backbone.patch_size"),
        ("method.views.local_scale=[0.5,0.1]", "method.views.local_scale"),
        ("+data.colour=1", "data.colour"),
        ("fsdp.param_dtype=int8", "fsdp.param_dtype"),
    ],
)
def test_bad_values_name_the_key(compose_cfg, override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        validate(compose_cfg("data=fake", override))


@pytest.mark.parametrize("overrides,key", [
    (["trainer.precision=16-mixed"], "trainer.precision"),
    (["fsdp.param_dtype=fp16"], "fsdp.param_dtype"),
    (["fsdp.param_dtype=bf16", "trainer.precision=32-true"], "fsdp.param_dtype"),
    (["+trainer.sync_batchnorm=true"], "trainer.sync_batchnorm"),
])
def test_fsdp_refuses_what_it_cannot_do(compose_cfg, overrides, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        validate(compose_cfg("data=fake", "hardware=fsdp", *overrides))


def test_fsdp_bf16_weights_compose(compose_cfg):
    tc = validate(compose_cfg("data=fake", "hardware=fsdp", "fsdp.param_dtype=bf16"))
    assert tc.trainer["strategy"] == "fsdp" and tc.fsdp.param_dtype == "bf16"


def test_missing_root_is_clear(compose_cfg):
    with pytest.raises(ConfigError, match="data.root"):
        validate(compose_cfg("data=cifar10", "data.root=null"))


def test_unknown_override_and_group_fail_at_compose(compose_cfg):
    with pytest.raises(ConfigCompositionException, match="lamda"):
        compose_cfg("method.lamda=0.1")
    with pytest.raises(ConfigCompositionException, match="nope"):
        compose_cfg("method=nope")


def test_wandb_group_is_the_sweep_dir_in_multirun_only():
    from jepa_zoo.loggers import sweep_group

    assert sweep_group("RunMode.MULTIRUN", "multirun/lejepa/2026-11-23_10-00-00") == "lejepa/2026-11-23_10-00-00"
    assert sweep_group("RunMode.RUN", "multirun/lejepa/2026-11-23_10-00-00") is None


def test_a_checkpoint_config_with_a_retired_key_still_loads(compose_cfg):
    """I-JEPA checkpoints written before ``method.mrr`` moved to IWM hold it: validate_saved drops it
    (and only the retired keys: a saved typo is still refused), validate alone refuses it."""
    import dataclasses

    from jepa_zoo.config import validate_saved
    from jepa_zoo.methods.ijepa import IJEPA

    saved = dataclasses.asdict(validate(compose_cfg("method=ijepa", "backbone=vit_t", "data=fake")))
    old = {**saved, "method": {**saved["method"], "mrr": {"enabled": False, "every_n_epochs": 1,
                                                          "num_images": 16, "bank_size": 256}}}
    with pytest.raises(ConfigError, match="method.mrr"):
        validate(OmegaConf.create(old))
    assert validate_saved(old) == validate_saved(saved)
    assert isinstance(IJEPA(old), IJEPA)  # as load_from_checkpoint builds it
    with pytest.raises(ConfigError, match="method.mrrr") as refused:
        validate_saved({**saved, "method": {**saved["method"], "mrrr": 1}})
    assert str(refused.value) == "method.mrrr: Key 'mrrr' not in 'IJEPAConfig'"  # one line, no OmegaConf detail


@pytest.mark.parametrize("method", ["lejepa", "ijepa", "iwm"])
def test_method_yamls_hold_only_what_differs_from_their_schema(method):
    """One owner per default: the schema (ConfigStore ``schema/method/<name>``, what the yaml extends).
    A value the yaml repeats is reported; every schema key can be overridden without ``+``."""
    import yaml

    from jepa_zoo.registry import method_spec

    defaults = OmegaConf.to_container(OmegaConf.structured(method_spec(method).schema))
    own = yaml.safe_load((CONF_DIR / "method" / f"{method}.yaml").read_text())
    assert f"/schema/method/{method}@_here_" in own["defaults"]

    def repeated(theirs, ours, prefix=""):
        for k, v in ours.items():
            if isinstance(v, dict):
                yield from repeated(theirs.get(k, {}), v, f"{prefix}{k}.")
            elif k != "defaults" and theirs.get(k, object()) == v:
                yield prefix + k

    assert list(repeated(defaults, own)) == []


def test_every_schema_key_takes_an_override(compose_cfg):
    """LeJEPA's yaml once lacked optim.warmup_start_ratio: overriding it needed +; the schema has it."""
    tc = validate(compose_cfg("data=fake", "method.optim.warmup_start_ratio=0.1", "method.optim.final_weight_decay=0.2"))
    assert (tc.method.optim.warmup_start_ratio, tc.method.optim.final_weight_decay) == (0.1, 0.2)


def test_checkpoints_from_before_the_official_sincos_order_keep_theirs(compose_cfg):
    """backbone.sincos_order is new: a saved config without it was trained with timm's order."""
    import dataclasses

    from jepa_zoo.config import validate_saved

    saved = dataclasses.asdict(validate(compose_cfg("backbone=vit_t", "data=fake")))
    assert saved["backbone"]["sincos_order"] == "ijepa"  # the default now
    old = {**saved, "backbone": {k: v for k, v in saved["backbone"].items() if k != "sincos_order"}}
    assert validate_saved(old).backbone.sincos_order == "timm"
    assert validate_saved(saved).backbone.sincos_order == "ijepa"
