""" NaFlex COPE ViTs: a packed batch of images of several sizes gives each image what it gives alone, padding
changes nothing real, and a COPE ViT's checkpoint loads with the same logits where the architectures agree. """
import pytest
import timm
import torch
from naflex_batches import packed as _packed
from timm_posembed.models import describe_checkpoint

NAME = 'naflexvit_tiny_patch16_cope'
SMALL = dict(depth=2, num_classes=5)  # two blocks: the per-image paths are the embedding's and the masks'


def _perturbed_cope(model: torch.nn.Module) -> None:
    # trained tables are not the sinusoid init: make every row its own, so a token given another's angle shows
    with torch.no_grad():
        for p in model.embeds.cope.parameters() if hasattr(model, 'embeds') else model.cope.parameters():
            p.add_(0.2 * torch.randn_like(p))


@pytest.fixture(scope='module')
def model():
    torch.manual_seed(0)
    m = timm.create_model(NAME, **SMALL).eval()
    _perturbed_cope(m)
    return m


# sizes of one batch: the reference grid (14x14 = 224 px), others of every aspect, one of a single patch
SIZES = [(224, 224), (64, 160), (160, 48), (96, 96), (16, 16), (48, 240)]


@pytest.mark.parametrize('cope_resize', ['interpolate', 'extrapolate'])
def test_packed_batch_of_mixed_sizes_equals_each_image_alone(cope_resize):
    torch.manual_seed(0)
    model = timm.create_model(NAME, cope_resize=cope_resize, **SMALL).eval()
    _perturbed_cope(model)
    images = [torch.randn(3, h, w) for h, w in SIZES]
    with torch.no_grad():
        packed = model(_packed(images, shuffle_seed=1))
        alone_naflex = torch.cat([model(_packed([im])) for im in images])
        alone_image = torch.cat([model(im[None]) for im in images])  # the plain (B, C, H, W) path
    torch.testing.assert_close(packed, alone_naflex, atol=1e-5, rtol=0)
    torch.testing.assert_close(packed, alone_image, atol=1e-5, rtol=0)
    assert (packed[0] - packed[3]).abs().max() > 1e-3  # the images differ: a constant output would pass above


def test_padding_tokens_change_no_real_token(model):
    images = [torch.randn(3, 48, 80), torch.randn(3, 32, 32)]
    batch = _packed(images, pad_to=20)
    other = {k: v.clone() for k, v in batch.items()}
    padding = ~other['patch_valid']
    other['patches'][padding] = 100 * torch.randn_like(other['patches'][padding])
    other['patch_coord'][padding] = 13  # coordinates of a padding token do not enlarge its image's grid
    with torch.no_grad():
        real = model.forward_features(batch['patches'], batch['patch_coord'], batch['patch_valid'])['patches'][
            :, 1:][batch['patch_valid']]
        real_other = model.forward_features(other['patches'], other['patch_coord'], other['patch_valid'])['patches'][
            :, 1:][batch['patch_valid']]
        embeds = model.embeds(other['patches'], other['patch_coord'], other['patch_valid'])[0]
        plain_embeds = model.embeds.proj(other['patches'])
    torch.testing.assert_close(real, real_other, atol=1e-5, rtol=0)
    # COPE leaves the padding tokens as the patch embedding made them
    torch.testing.assert_close(embeds[:, 1:][padding], plain_embeds[padding], atol=0, rtol=0)


@pytest.mark.parametrize('vit_name, naflex_name', [('vit_tiny_cope', NAME),
                                                   ('vit_small_cope', 'naflexvit_small_patch16_cope')])
def test_loads_a_cope_vit_checkpoint_with_the_same_logits(vit_name, naflex_name, tmp_path):
    """A COPE ViT with grid positions, saved as train.py saves it, through timm's pretrained route."""
    torch.manual_seed(0)
    vit = timm.create_model(vit_name, cope_positions='grid', dynamic_img_size=True, **SMALL).eval()
    _perturbed_cope(vit)
    path = tmp_path / 'checkpoint.pth.tar'
    torch.save({'epoch': 3, 'state_dict': vit.state_dict()}, path)
    naflex = timm.create_model(naflex_name, pretrained=True, pretrained_cfg_overlay=dict(file=str(path), num_classes=5),
                               **SMALL).eval()
    at_224 = torch.randn(2, 3, 224, 224)
    other = torch.randn(1, 3, 80, 176)  # another grid: both resample the tables the same way (interpolate)
    with torch.no_grad():
        torch.testing.assert_close(naflex(at_224), vit(at_224), atol=1e-5, rtol=0)
        torch.testing.assert_close(naflex(_packed(list(at_224))), vit(at_224), atol=1e-5, rtol=0)
        torch.testing.assert_close(naflex(_packed(list(other))), vit(other), atol=1e-5, rtol=0)


def test_cope_tables_of_another_square_grid_are_resampled_on_load():
    torch.manual_seed(0)
    vit = timm.create_model('vit_tiny_cope', cope_positions='grid', img_size=128, **SMALL).eval()  # 8x8 grid
    _perturbed_cope(vit)
    from timm_posembed.models.naflexvit_cope import checkpoint_filter_fn
    naflex = timm.create_model(NAME, **SMALL).eval()
    naflex.load_state_dict(checkpoint_filter_fn(vit.state_dict(), naflex))
    vit.set_input_size(img_size=(224, 224))  # the ViT's own resampling of its tables to 14x14
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(naflex(x), vit(x), atol=1e-5, rtol=0)


def test_checkpoints_are_described_and_a_naflex_checkpoint_is_not_a_vit_one():
    state = timm.create_model(NAME, device='meta', **SMALL).state_dict()
    facts = describe_checkpoint(state)
    assert facts['family'].startswith('NaFlex COPE ViT') and facts['embed_dim'] == 192 and facts['depth'] == 2
    vit_state = timm.create_model('vit_tiny_cope', device='meta', **SMALL).state_dict()
    assert describe_checkpoint(vit_state)['family'].startswith('COPE ViT')


def test_rejects_a_second_position_embedding():
    with pytest.raises(ValueError, match="pos_embed must be 'none'.*naflexvit_"):
        timm.create_model(NAME, pos_embed='learned', **SMALL)


def test_no_weight_decay_names_the_cope_tables(model):
    names = dict(model.named_parameters())
    skip = model.no_weight_decay()
    assert {'embeds.cope.freq', 'embeds.cope.phase'} <= skip
    assert all(k in names for k in skip if k.startswith('embeds.cope'))


def test_cope_vit_checkpoint_loads_into_channels_first_patches():
    """patchify_channels_last=False reads (channel, row, column) patches: the conv weights flatten in that order."""
    torch.manual_seed(0)
    vit = timm.create_model('vit_tiny_cope', cope_positions='grid', **SMALL).eval()
    from timm_posembed.models.naflexvit_cope import checkpoint_filter_fn
    naflex = timm.create_model(NAME, patchify_channels_last=False, **SMALL).eval()
    naflex.load_state_dict(checkpoint_filter_fn(vit.state_dict(), naflex))
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(naflex(x), vit(x), atol=1e-5, rtol=0)
