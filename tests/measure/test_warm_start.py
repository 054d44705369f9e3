""" The warm-start study (timm_posembed/measure/warm_start.py): its splits, that the warm and the scratch run differ
only in what was taken from timm's ViT, and that its result names the stand-in source for what it is. """
import dataclasses
import gzip
import struct

import pytest
import timm
import torch
from safetensors.torch import load_file, save_file

from timm_posembed.measure import warm_start
from timm_posembed.measure.warm_start import StudyConfig, class_split, fine_tune, format_markdown, pretrain_timm_vit

TINY = StudyConfig(img_size=16, patch_size=8, depth=1, pretrain_per_class=4, finetune_per_class=3, test_per_class=2,
                   pretrain_epochs=1, finetune_epochs=1, batch_size=8)


def _write_idx(folder, prefix, labels):
    images = torch.randint(0, 256, (len(labels), 28, 28), generator=torch.Generator().manual_seed(len(labels)))
    (folder / f'{prefix}-images-idx3-ubyte.gz').write_bytes(gzip.compress(
        struct.pack('>IIII', 2051, len(labels), 28, 28) + bytes(images.to(torch.uint8).flatten().tolist())))
    (folder / f'{prefix}-labels-idx1-ubyte').write_bytes(struct.pack('>II', 2049, len(labels)) + bytes(labels))


def test_class_split_takes_the_first_images_of_each_class_and_relabels_them():
    images = torch.arange(12.).view(12, 1, 1, 1)
    labels = torch.tensor([5, 0, 6, 5, 6, 5, 1, 6, 5, 0, 0, 1])
    x, y = class_split(images, labels, (6, 5), per_class=2)
    assert x.flatten().tolist() == [2., 4., 0., 3.] and y.tolist() == [0, 0, 1, 1]


def test_warm_and_scratch_runs_differ_only_in_what_was_taken(tmp_path):
    torch.manual_seed(0)
    images, labels = torch.rand(8, 1, 28, 28), torch.arange(8) % 5
    file, _ = pretrain_timm_vit(images, labels, TINY, 0, tmp_path / 'timm_vit.safetensors')
    timm_weights = load_file(str(file))
    warm = fine_tune(True, images, labels, TINY, seed=3, pretrained_file=file, epochs=0).state_dict()
    scratch = fine_tune(False, images, labels, TINY, seed=3, epochs=0).state_dict()
    for key in ('cope.freq', 'cope.phase', 'head.weight', 'head.bias'):  # the new embedding, the new classifier
        assert torch.equal(warm[key], scratch[key]), key
    for key in ('blocks.0.attn.qkv.weight', 'patch_embed.proj.weight', 'cls_token', 'blocks.0.mlp.fc1.weight'):
        assert torch.equal(warm[key], timm_weights[key]), key
        assert not torch.equal(scratch[key], timm_weights[key]), key


def test_study_labels_its_stand_in_source(tmp_path):
    _write_idx(tmp_path, 'train', [c for c in range(10) for _ in range(4)])
    _write_idx(tmp_path, 't10k', [c for c in range(10) for _ in range(2)])
    result = warm_start.run_study(TINY, str(tmp_path), seeds=[0, 1], log=lambda *_: None)
    assert [(r['start'], r['seed']) for r in result['rows']] == [('warm', 0), ('scratch', 0), ('warm', 1),
                                                                  ('scratch', 1)]
    assert all(0 <= r['top1'] <= 100 for r in result['rows'])
    table = format_markdown(result)
    assert 'pretrained here for 1 epochs on Fashion-MNIST classes [0, 1, 2, 3, 4]' in table
    assert "a stand-in for timm's ImageNet weights" in table
    assert '| warm | 0, 1 |' in table and '| scratch | 0, 1 |' in table
    assert 'Warm minus scratch: ' in table and ' the seed-to-seed spread' in table


def test_missing_idx_files_name_the_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match=rf'{tmp_path}: no train-images-idx3-ubyte\[\.gz\]'):
        warm_start.read_fashion_mnist(str(tmp_path), True)


def test_timms_real_weights_route_takes_the_files_blocks(tmp_path):
    # --timm-source NAME --timm-file FILE: timm's full-depth ViT-Ti, read by timm's loader (input conv summed to one
    # channel)
    torch.manual_seed(0)
    timm_vit = timm.create_model('vit_tiny_patch16_224')
    file = tmp_path / 'vit_tiny.safetensors'
    save_file({k: v.contiguous() for k, v in timm_vit.state_dict().items()}, str(file))
    cfg = dataclasses.replace(TINY, img_size=32, timm_source='vit_tiny_patch16_224.augreg_in21k_ft_in1k',
                              timm_file=str(file))
    images, labels = torch.rand(4, 1, 28, 28), torch.arange(4)
    warm = fine_tune(True, images, labels, cfg, seed=1, epochs=0).state_dict()
    assert torch.equal(warm['blocks.11.mlp.fc2.weight'], timm_vit.state_dict()['blocks.11.mlp.fc2.weight'])
    assert torch.allclose(warm['patch_embed.proj.weight'], timm_vit.patch_embed.proj.weight.sum(1, keepdim=True))
