""" DistributedDataParallel with every model family: two CPU processes (gloo), plain DDP.

``find_unused_parameters`` stays off, as timm's train.py leaves it: then every parameter must get a gradient in
every step, or DDP's second step raises. Each rank trains on its own data; after three steps the replicas must
still be identical (DDP averaged the gradients), and different from the initial weights (they did train).
"""
import json
from datetime import timedelta
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

WORLD_SIZE = 2
STEPS = 3
# model -> the smallest input it takes (CoaT-Lite's last stage is 1/32 of the input, the ViTs' patches 16 px)
FAMILY_MODELS = {
    'vit_tiny_cope': 32,
    'vit_tiny_supertoken_conv': 32,
    'vit_small_conv_embed': 32,
    'coat_lite_clustering': 64,
}


def _flat_params(model: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def _train_replicas(rank: int, store_file: str, results_dir: str) -> None:
    import timm
    import timm_posembed  # noqa: F401
    from torch.nn.parallel import DistributedDataParallel

    torch.set_num_threads(1)
    dist.init_process_group('gloo', init_method=f'file://{store_file}', rank=rank, world_size=WORLD_SIZE,
                            timeout=timedelta(minutes=5))  # a rank that failed alone ends the other's wait
    results = {}
    try:
        for name, img_size in FAMILY_MODELS.items():
            # different initial weights per rank on purpose: DDP must broadcast rank 0's at construction
            torch.manual_seed(100 + rank)
            model = timm.create_model(name, img_size=img_size, num_classes=5)
            ddp = DistributedDataParallel(model)  # no device_ids on CPU; find_unused_parameters=False
            initial = _flat_params(model).clone()
            optimizer = torch.optim.SGD(ddp.parameters(), lr=0.05)
            data = torch.Generator().manual_seed(1000 * (rank + 1))  # each rank its own batches
            for _ in range(STEPS):
                x = torch.randn(2, 3, img_size, img_size, generator=data)
                y = torch.randint(0, 5, (2,), generator=data)
                optimizer.zero_grad()
                torch.nn.functional.cross_entropy(ddp(x), y).backward()
                optimizer.step()
            final = _flat_params(model)
            gathered = [torch.empty_like(final) for _ in range(WORLD_SIZE)]
            dist.all_gather(gathered, final)
            start = [torch.empty_like(initial) for _ in range(WORLD_SIZE)]
            dist.all_gather(start, initial)
            unchanged = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
            results[name] = {
                'max_diff_between_ranks': (gathered[0] - gathered[1]).abs().max().item(),
                'initial_diff_between_ranks': (start[0] - start[1]).abs().max().item(),
                'max_change': (final - initial).abs().max().item(),
                'params_without_grad': unchanged,
            }
    except Exception as e:  # reported to the test, which names the model that failed
        results['error'] = f'{type(e).__name__}: {e}'
    finally:
        dist.destroy_process_group()
    Path(results_dir, f'rank{rank}.json').write_text(json.dumps(results))


@pytest.fixture(scope='module')
def ddp_results(tmp_path_factory):
    tmp = tmp_path_factory.mktemp('ddp')
    mp.spawn(_train_replicas, args=(str(tmp / 'store'), str(tmp)), nprocs=WORLD_SIZE, join=True)
    return [json.loads((tmp / f'rank{r}.json').read_text()) for r in range(WORLD_SIZE)]


@pytest.mark.parametrize('model_name', FAMILY_MODELS)
def test_ddp_keeps_replicas_identical(ddp_results, model_name):
    for rank, results in enumerate(ddp_results):
        assert 'error' not in results, f'rank {rank}: {results["error"]}'
        r = results[model_name]
        assert r['initial_diff_between_ranks'] == 0.0  # DDP broadcast rank 0's weights
        assert r['max_diff_between_ranks'] == 0.0
        assert r['max_change'] > 0.0
        assert r['params_without_grad'] == []
