""" The clustering-fidelity measurement: its Fashion-MNIST reader, cluster counting, the study's rows (trained here
and from timm CoaT-Lite weights) and the super-token border difference. """
import gzip
import struct

import pytest
import timm
import torch
from safetensors.torch import save_file

from timm_posembed.measure import clustering_fidelity as cf


def _write_idx(folder, split, n, gz=True):
    images_name, labels_name = cf._FILES[split]
    g = torch.Generator().manual_seed(n)
    images = torch.randint(0, 256, (n, 28, 28), generator=g, dtype=torch.uint8)
    labels = torch.arange(n, dtype=torch.uint8) % 10
    for name, magic, array in ((images_name, 0x803, images), (labels_name, 0x801, labels)):
        data = struct.pack('>I', magic) + struct.pack(f'>{array.ndim}I', *array.shape) + bytes(array.flatten().tolist())
        if gz:
            with gzip.open(folder / f'{name}.gz', 'wb') as f:
                f.write(data)
        else:
            (folder / name).write_bytes(data)
    return images, labels


def test_reader_returns_the_files_images_and_labels_and_names_bad_files(tmp_path):
    images, labels = _write_idx(tmp_path, 'test', 6)
    x, y = cf.load_fashion_mnist(str(tmp_path), 'test', limit=5)
    assert x.shape == (5, 1, 28, 28) and torch.equal(y, labels[:5].long())
    torch.testing.assert_close(x[:, 0], (images[:5].float() / 255 - cf._MEAN) / cf._STD)
    raw = tmp_path / 'raw'
    raw.mkdir()
    _write_idx(raw, 'train', 3, gz=False)
    assert cf.load_fashion_mnist(str(raw), 'train')[0].shape == (3, 1, 28, 28)
    with pytest.raises(ValueError, match=r'--data-dir .*no train-images-idx3-ubyte\[\.gz\] there'):
        cf.load_fashion_mnist(str(tmp_path), 'train')
    (raw / 'train-labels-idx1-ubyte').write_bytes(b'\x00\x00\x08\x03' + b'\x00' * 8)
    with pytest.raises(ValueError, match=r'train-labels-idx1-ubyte: not a Fashion-MNIST idx file'):
        cf.load_fashion_mnist(str(raw), 'train')


def test_stage_clusters_count_tokens_per_stage():
    x = torch.randn(3, 1, 28, 28)
    # every query its own cluster: clusters = tokens (class token included) at every stage
    model = timm.create_model('coat_lite_clustering', img_size=32, in_chans=1, num_classes=10, cluster_singleton=True)
    assert cf.stage_clusters(model, x, 32, batch_size=2) == [(65.0, 65), (17.0, 17), (5.0, 5), (2.0, 2)]
    # one bucket for all patches: the class token and one cluster; stage 2 not clustered
    model = timm.create_model('coat_lite_clustering', img_size=32, in_chans=1, num_classes=10,
                              cluster_bucket_width=1e9, cluster_stages=(0, 1, 3))
    counts = cf.stage_clusters(model, x, 32)
    assert [c for i, (c, _) in enumerate(counts) if i != 2] == [2.0, 2.0, 2.0] and counts[2][0] != counts[2][0]


def test_hash_study_rows_trained_here_and_from_timm_weights(tmp_path):
    _write_idx(tmp_path, 'train', 8)
    _write_idx(tmp_path, 'test', 4)
    rows = cf.hash_study(str(tmp_path), img_size=32, train_size=8, test_size=4, steps=1, batch_size=4)
    assert [(r['trained'], r['evaluated']) for r in rows] == [
        ('none', 'none'), ('none', 'ours'), ('none', 'act'), ('ours', 'ours'), ('act', 'act')]
    assert all(r['top1'] in (0.0, 0.25, 0.5, 0.75, 1.0) for r in rows)
    assert rows[0]['clusters'] is None and all(len(r['clusters']) == 4 for r in rows[1:])
    # timm's own coat_lite_tiny state dict (here randomly initialised: no Hub access) loads into both settings
    weights = tmp_path / 'coat_lite_tiny.safetensors'
    save_file({k: v.clone() for k, v in timm.create_model('coat_lite_tiny').state_dict().items()}, str(weights))
    rows = cf.hash_study(str(tmp_path), img_size=32, test_size=2, checkpoint=str(weights))
    assert [r['evaluated'] for r in rows] == ['ours', 'act'] and all(r['top1'] is None for r in rows)
    assert all([t for _, t in r['clusters']] == [65, 17, 5, 2] for r in rows)
    with pytest.raises(SystemExit):
        cf.main(['hash', '--data-dir', str(tmp_path), '--checkpoint', str(tmp_path / 'missing.pth')])


def test_border_difference_is_local_at_one_round_and_spreads():
    rows = cf.border_difference(num_iters=(1, 2), channels=8, size=16, batch=2)
    one, two = (r['relative_difference'] for r in rows)
    # t=1: only border pixels' softmax changes, and their weights reach their own and the next ring of cells
    assert one[0] > 1e-3 and one[1] > 1e-3 and one[2] == 0.0
    assert two[2] > 0.0 and two[0] > one[0]
