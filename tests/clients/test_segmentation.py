""" Dense prediction with segmentation_models_pytorch (smp): its ``tu-`` encoders are timm models, built through
``timm.create_model(..., features_only=True)`` (Unet and the other CNN-style decoders) or ``forward_intermediates``
(DPT, for single-stride ViTs), so this package's models plug in once ``timm_posembed`` is imported.

smp's Unet needs an encoder whose feature strides double from stage to stage; the single-stride ViTs (every
feature map at 1/16) go to DPT instead, which smp itself says when asked for a Unet of one.
"""
import pytest
import torch

smp = pytest.importorskip('segmentation_models_pytorch')

import timm_posembed  # noqa: E402,F401  (registers the models with timm, which smp's tu- encoders call)

IMG_SIZE = 64
NUM_CLASSES = 3


def _forward_backward(model: torch.nn.Module) -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 3, IMG_SIZE, IMG_SIZE)
    target = torch.randint(0, NUM_CLASSES, (2, IMG_SIZE, IMG_SIZE))
    masks = model(x)
    assert masks.shape == (2, NUM_CLASSES, IMG_SIZE, IMG_SIZE)  # a class map at the input's full resolution
    torch.nn.functional.cross_entropy(masks, target).backward()
    encoder_params = list(model.encoder.parameters())
    # the loss reaches the encoder (our model), not just smp's decoder
    with_grad = [p for p in encoder_params if p.grad is not None and p.grad.abs().sum() > 0]
    assert len(with_grad) > 0.9 * len(encoder_params), f'{len(with_grad)} of {len(encoder_params)} have a gradient'


def test_unet_on_clustering_coat():
    # depth 5 (smp's default) = all four CoaT stages (1/4 .. 1/32) below a stride-2 slot that smp leaves empty
    model = smp.Unet('tu-coat_lite_clustering', encoder_weights=None, decoder_channels=(64, 32, 16, 8, 8),
                     classes=NUM_CLASSES, img_size=IMG_SIZE)
    assert model.encoder.out_channels == [3, 0, 64, 128, 256, 320]
    _forward_backward(model)


@pytest.mark.parametrize('model_name', ['vit_tiny_cope', 'vit_tiny_supertoken_conv'])
def test_dpt_on_single_stride_vits(model_name):
    model = smp.DPT(f'tu-{model_name}', encoder_weights=None, classes=NUM_CLASSES, img_size=IMG_SIZE,
                    decoder_intermediate_channels=(32, 64, 96, 128), decoder_fusion_channels=32)
    _forward_backward(model)


def test_unet_refuses_single_stride_vits_saying_so():
    with pytest.raises(ValueError, match='downsampling pattern'):
        smp.Unet('tu-vit_tiny_cope', encoder_weights=None, img_size=IMG_SIZE)
