import pytest
import torch

from jepa_zoo.config import BackboneConfig
from jepa_zoo.models.backbones import TimmEncoder, ViTEncoder, build_backbone, gather_tokens


@pytest.fixture(scope="module")
def vit():
    torch.manual_seed(0)
    return ViTEncoder(BackboneConfig(img_size=32, patch_size=8, kwargs={"depth": 2})).eval()


def test_vit_tokens_and_pooled(vit):
    x = torch.randn(2, 3, 32, 32)
    assert vit.forward_tokens(x).shape == (2, 16, 192)
    assert vit(x).shape == (2, 192) and vit.embed_dim == 192 and vit.grid_size == (4, 4)
    assert vit.forward_tokens(torch.randn(2, 3, 16, 16)).shape == (2, 4, 192)  # other sizes: own grid


def test_mask_gathers_after_position_embedding(vit):
    x = torch.randn(2, 3, 32, 32)
    full = vit.forward_tokens(x)
    perm = torch.stack([torch.randperm(16), torch.randperm(16)])
    # attention is permutation-equivariant once positions are added, so a permuted index set
    # must give the permuted full output
    assert torch.allclose(vit.forward_tokens(x, perm), gather_tokens(full, perm), atol=1e-5)
    keep = torch.tensor([[0, 5, 15], [1, 2, 3]])
    assert vit.forward_tokens(x, keep).shape == (2, 3, 192)


def test_gather_shape_check():
    with pytest.raises(ValueError, match="idx must be"):
        gather_tokens(torch.zeros(2, 4, 3), torch.zeros(3, 1, dtype=torch.long))


def test_resnet_cifar_stem_keeps_resolution():
    m = TimmEncoder(BackboneConfig(kind="timm", name="resnet18", cifar_stem=True))
    assert isinstance(m.model.maxpool, torch.nn.Identity) and m.model.conv1.stride == (1, 1)
    assert m(torch.randn(2, 3, 32, 32)).shape == (2, 512) and m.embed_dim == 512


def test_channels_last_is_the_same_function_in_nhwc():
    torch.manual_seed(0)
    plain = TimmEncoder(BackboneConfig(kind="timm", name="resnet18", cifar_stem=True)).eval()
    nhwc = TimmEncoder(BackboneConfig(kind="timm", name="resnet18", cifar_stem=True, channels_last=True)).eval()
    nhwc.load_state_dict(plain.state_dict())  # loading keeps the NHWC layout of the parameters
    assert nhwc.model.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    assert not plain.model.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    seen = []
    nhwc.model.layer1.register_forward_hook(lambda m, i, o: seen.append(i[0]))
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(nhwc(x), plain(x), atol=1e-4)
    assert seen[0].is_contiguous(memory_format=torch.channels_last)  # activations, not only weights
    assert {k: v.shape for k, v in nhwc.state_dict().items()} == {k: v.shape for k, v in plain.state_dict().items()}
    with pytest.raises(ValueError, match="backbone.channels_last: applies to kind=timm"):
        BackboneConfig(channels_last=True)


def test_any_timm_name_and_unknown_name():
    m = build_backbone(BackboneConfig(kind="timm", name="convnext_atto"))
    assert m(torch.randn(1, 3, 64, 64)).shape == (1, m.embed_dim)
    with pytest.raises(ValueError, match="unknown timm model 'resnet1800'"):
        build_backbone(BackboneConfig(kind="timm", name="resnet1800"))


@pytest.mark.parametrize("option", ["vit_t", "vit_s", "vit_b", "vit_l", "vit_h", "resnet18", "resnet50"])
def test_every_backbone_option_runs_global_and_local_views(compose_cfg, option):
    from jepa_zoo.config import validate

    tc = validate(compose_cfg(f"backbone={option}", "data.root=/x", "+backbone.kwargs.depth=1"
                              if option.startswith("vit") else "backbone.drop_path_rate=0.0"))
    m = build_backbone(tc.backbone).eval()
    with torch.no_grad():
        for size in (tc.method.views.global_size, tc.method.views.local_size):  # 224 and 96 px
            assert m(torch.randn(1, 3, size, size)).shape == (1, m.embed_dim)


def test_timm_vit_passthrough_takes_small_views():
    m = build_backbone(BackboneConfig(kind="timm", name="deit_tiny_patch16_224", img_size=32,
                                      kwargs={"depth": 1})).eval()
    with torch.no_grad():
        assert m(torch.randn(2, 3, 32, 32)).shape == (2, 192)
        assert m(torch.randn(2, 3, 16, 16)).shape == (2, 192)
