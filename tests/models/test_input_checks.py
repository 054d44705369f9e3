""" Every model family on inputs at the edges: an empty batch, and images of a dtype the model does not compute in
(uint8 straight from a decoder, float64 from numpy). One model per family, at a small size. """
import pytest
import timm
import torch

import timm_posembed  # noqa: F401  (registers the models)

FAMILIES = [  # (model, img_size): one per family
    ('vit_tiny_cope', 32),
    ('vit_tiny_supertoken_conv', 64),
    ('vit_small_conv_embed', 32),
    ('coat_lite_clustering', 64),
]


@pytest.fixture(scope='module', params=FAMILIES, ids=[name for name, _ in FAMILIES])
def model_and_size(request):
    name, size = request.param
    torch.manual_seed(0)
    return timm.create_model(name, num_classes=7, img_size=size).eval(), size


def test_an_empty_batch_gives_an_empty_batch_of_logits(model_and_size):
    model, size = model_and_size
    with torch.no_grad():
        assert model(torch.zeros(0, 3, size, size)).shape == (0, 7)


@pytest.mark.parametrize('dtype, fix', [(torch.uint8, r'x.float\(\) / 255'), (torch.float64, r'x.to\(torch.float32\)')])
def test_a_wrong_dtype_is_named_with_what_is_expected(model_and_size, dtype, fix):
    model, size = model_and_size
    x = torch.zeros(1, 3, size, size, dtype=dtype)
    with pytest.raises(ValueError, match=rf'expected a torch.float32 image batch like the model\'s parameters, got '
                                         rf'{dtype}; convert it, e.g. {fix}'):
        model(x)


def test_other_dtypes_run_where_torch_computes_them(model_and_size):
    model, size = model_and_size
    x = torch.randn(1, 3, size, size)
    with torch.no_grad():
        with torch.autocast('cpu', dtype=torch.bfloat16):  # autocast casts the input itself
            assert model(x.bfloat16()).shape == (1, 7)
        assert model.double()(x.double()).dtype == torch.float64  # a float64 model takes float64 images
    model.float()


def test_the_dtype_error_survives_torchscript():
    model = torch.jit.script(timm.create_model('coat_lite_clustering', num_classes=7, img_size=64).eval())
    with pytest.raises(Exception, match='got torch.uint8'):  # TorchScript re-raises it as a RuntimeError
        model(torch.zeros(1, 3, 64, 64, dtype=torch.uint8))
