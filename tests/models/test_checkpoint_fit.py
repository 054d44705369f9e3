""" One check for every checkpoint loaded into this package's models (``check_checkpoint_fits``, run by the builder
after each family's transform-only ``checkpoint_filter_fn``, and by ``publish``): a checkpoint that does not fit
is refused with one message that names the file, says what the checkpoint is and which arguments create the
variant it was trained as, instead of torch's size-mismatch wall; what timm itself adapts (a replaced classifier,
another ``in_chans``) still loads. """
import pytest
import timm
import torch
from safetensors.torch import save_file

from timm_posembed.models import CheckpointMismatchError, check_checkpoint_fits


def _save(model: torch.nn.Module, path) -> str:
    save_file({k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}, str(path))
    return str(path)


def test_coat_of_another_width_names_the_variant(tmp_path):
    mini = _save(timm.create_model('coat_lite_mini', num_classes=10), tmp_path / 'coat_lite_mini.safetensors')
    with pytest.raises(CheckpointMismatchError) as info:
        timm.create_model('coat_lite_clustering_tiny', pretrained=True, pretrained_cfg_overlay=dict(file=mini))
    msg = str(info.value)
    assert msg.startswith(f'{mini}: the checkpoint does not match coat_lite_clustering_tiny')
    assert 'This checkpoint is a CoaT-Lite' in msg and 'serial_depths [2, 2, 2, 2]' in msg
    assert "timm.create_model('coat_lite_clustering_tiny', num_classes=10, embed_dims=[64, 128, 320, 512])" in msg
    assert 'size mismatch for' not in msg  # not torch's wall
    assert len(msg.splitlines()) == 2


def test_class_count_is_read_off_the_classifier(tmp_path):
    # vit_tiny_supertoken_conv's cfg has 100 classes: timm keeps the head and loads strictly, so a 3-class
    # checkpoint must be named as such rather than fail in torch
    trained = timm.create_model('vit_tiny_supertoken_conv', num_classes=3, img_size=64)
    path = _save(trained, tmp_path / 'three.safetensors')
    with pytest.raises(CheckpointMismatchError, match=r"create the variant it was trained as: timm\.create_model\("
                                                     r"'vit_tiny_supertoken_conv', num_classes=3\)"):
        timm.create_model('vit_tiny_supertoken_conv', img_size=64, pretrained=True,
                          pretrained_cfg_overlay=dict(file=path, num_classes=100))
    # as the message says, it loads (and gives the trained model's outputs)
    loaded = timm.create_model('vit_tiny_supertoken_conv', img_size=64, num_classes=3, pretrained=True,
                               pretrained_cfg_overlay=dict(file=path, num_classes=3)).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(loaded(x), trained.eval()(x))


def test_what_timm_adapts_still_loads():
    trained = timm.create_model('coat_lite_clustering_tiny', num_classes=5)
    # another class count (timm replaces the classifier), and another in_chans (timm adapts the first conv)
    new_head = timm.create_model('coat_lite_clustering_tiny', num_classes=7, pretrained=True,
                                 pretrained_cfg_overlay=dict(state_dict=trained.state_dict(), num_classes=5))
    key = 'patch_embed4.proj.weight'
    assert torch.equal(new_head.state_dict()[key], trained.state_dict()[key])
    gray = timm.create_model('coat_lite_clustering_tiny', num_classes=5, in_chans=1, pretrained=True,
                             pretrained_cfg_overlay=dict(state_dict=trained.state_dict(), num_classes=5))
    assert gray.patch_embed1.proj.weight.shape[1] == 1


def test_deeper_checkpoint_into_shallower_model():
    deep = timm.create_model('vit_tiny_supertoken_conv', num_classes=3, img_size=64, depth=3)
    shallow = timm.create_model('vit_tiny_supertoken_conv', num_classes=3, img_size=64, depth=2)
    with pytest.raises(CheckpointMismatchError) as info:
        check_checkpoint_fits(shallow, deep.state_dict(), 'deep.safetensors')
    msg = str(info.value)
    assert 'unexpected keys [blocks.2.' in msg and 'depth=3' in msg and msg.startswith('deep.safetensors: ')
    check_checkpoint_fits(deep, deep.state_dict(), 'deep.safetensors')  # a fitting checkpoint passes


def test_cope_checkpoints_are_named_by_family_width_mode_and_size():
    # the builder-level explanation, independent of the COPE filter (which only resizes tables)
    model = timm.create_model('vit_tiny_cope', img_size=32, num_classes=10)
    cases = [
        (timm.create_model('vit_tiny_patch16_224', img_size=32, num_classes=10),
         r"missing keys \[cope.freq, cope.phase\] \(2\); unexpected keys \[pos_embed\](.|\n)*is a ViT with a patch "
         r"embed and a learned pos_embed(.|\n)*cannot be loaded into vit_tiny_cope \(COPE ViT"),
        (timm.create_model('vit_small_cope', img_size=32, num_classes=10),
         r"create_model\('vit_tiny_cope', embed_dim=384, num_heads=<as trained"),
        (timm.create_model('vit_tiny_cope', img_size=32, num_classes=10, cope_mode='additive'),
         r"create_model\('vit_tiny_cope', cope_mode='additive'\)"),
        (timm.create_model('vit_tiny_cope', img_size=64, num_classes=10),
         r"create_model\('vit_tiny_cope', img_size=64\)"),
    ]
    for other, expected in cases:
        with pytest.raises(CheckpointMismatchError, match=expected):
            check_checkpoint_fits(model, other.state_dict(), 'w.safetensors')
