""" A folder written by ``timm-posembed publish --dry-run`` works with 🤗 transformers, offline: after
``import timm_posembed``, ``AutoModelForImageClassification.from_pretrained(DIR)`` (transformers' timm wrapper, which
builds the model with ``timm.create_model(architecture, num_classes=..., **model_args)`` from ``config.json`` and
loads ``model.safetensors``) gives timm's logits, and ``pipeline('image-classification', model=DIR)`` (the wrapper's
image processor, built from the config's ``pretrained_cfg``) gives timm's probabilities under the published names.
One model per family, at a small image size. """
import argparse
import json

import pytest
import timm
import torch
from PIL import Image

from timm_posembed.cli import main as cli_main

pytest.importorskip('transformers')
FAMILIES = [('vit_tiny_cope', 32), ('vit_tiny_supertoken_conv', 64), ('coat_lite_clustering_tiny', 64)]
LABELS = ['cat', 'dog', 'bird']


def _train_checkpoint(arch: str, size: int, path):
    torch.manual_seed(0)
    model = timm.create_model(arch, img_size=size, num_classes=len(LABELS)).eval()
    args = argparse.Namespace(model=arch, num_classes=len(LABELS), img_size=size, input_size=None, in_chans=None,
                              gp=None, model_kwargs={}, dataset='', data_dir='', train_split='train', class_map='')
    torch.save({'epoch': 0, 'arch': arch, 'state_dict': model.state_dict(), 'args': args}, str(path))
    return model


@pytest.fixture(scope='module')
def published(tmp_path_factory):
    root = tmp_path_factory.mktemp('transformers')
    cards = root / 'MODEL_CARDS.md'
    cards.write_text('\n'.join(f'<!-- card: {arch} -->\n## Title\n### Description\nd\n### Papers\n- p\n### Recipe\nr\n'
                               f"### Results\n#### Paper's numbers\nn\n#### Our numbers\nn\n### Limitations\nl\n"
                               f'### Citation\n```bibtex\n@misc{{x, title={{x}}}}\n```\n' for arch, _ in FAMILIES))
    labels = root / 'labels.txt'
    labels.write_text('\n'.join(LABELS))
    out = {}
    for arch, size in FAMILIES:
        ckpt = root / f'{arch}.pth.tar'
        model = _train_checkpoint(arch, size, ckpt)
        folder = root / arch
        assert cli_main(['publish', str(ckpt), '--model', arch, '--tag', 'pets', '--dataset', 'pets', '--out',
                         str(folder), '--label-names', str(labels), '--cards', str(cards), '--dry-run']) == 0
        out[arch] = (model, folder, size)
    return out


@pytest.fixture
def offline(monkeypatch):
    monkeypatch.setenv('HF_HUB_OFFLINE', '1')
    monkeypatch.setattr('socket.socket.connect', lambda *a, **k: pytest.fail('transformers touched the network'))


@pytest.mark.parametrize('arch', [a for a, _ in FAMILIES])
def test_transformers_loads_the_published_folder(published, arch, offline):
    from transformers import AutoModelForImageClassification, pipeline
    model, folder, size = published[arch]
    config = json.loads((folder / 'config.json').read_text())
    assert config['num_classes'] == len(LABELS) and 'num_classes' not in config['model_args']

    wrapped = AutoModelForImageClassification.from_pretrained(str(folder)).eval()
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        assert torch.equal(wrapped(pixel_values=x).logits, model(x))

    # timm's own way to classify an image with the published folder: its weights, its preprocessing
    timm_model = timm.create_model(f'local-dir:{folder}', pretrained=True).eval()
    image = Image.fromarray(torch.randint(0, 256, (size + 13, size + 7, 3), dtype=torch.uint8).numpy())
    transform = timm.data.create_transform(**timm.data.resolve_model_data_config(timm_model), is_training=False)
    with torch.no_grad():
        probabilities = timm_model(transform(image).unsqueeze(0)).softmax(-1)[0]
    predictions = pipeline('image-classification', model=str(folder))(image)
    assert sorted(p['label'] for p in predictions) == sorted(LABELS)
    for p in predictions:
        assert p['score'] == pytest.approx(probabilities[LABELS.index(p['label'])].item(), abs=1e-6)


def test_default_tag_only_when_the_checkpoint_fits_it(published, tmp_path, capsys):
    # a 3-class checkpoint is not vit_tiny_cope's default tag (tiny_imagenet, 200 classes): ask for --tag
    ckpt = tmp_path / 'three.pth.tar'
    _train_checkpoint('vit_tiny_cope', 32, ckpt)
    out = tmp_path / 'hub'
    assert cli_main(['publish', str(ckpt), '--model', 'vit_tiny_cope', '--out', str(out), '--dry-run']) == 2
    err = capsys.readouterr().err
    assert f"{ckpt} has 3 classes, but vit_tiny_cope's default tag 'tiny_imagenet' is for tiny-imagenet with 200" in err
    assert '--tag' in err and not out.exists()
