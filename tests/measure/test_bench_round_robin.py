""" The shared timing loop of the benchmarks: steps take turns, the median round is reported. """
import pytest
import torch

from timm_posembed.measure import bench


def test_steps_take_turns_and_the_median_round_is_returned(monkeypatch):
    calls = []
    clock = iter([0.0, 1.0, 1.0, 3.0,    # round 1: a takes 1 s, b takes 2 s
                  3.0, 13.0, 13.0, 14.0,  # round 2: a 10 s (a load spike), b 1 s
                  14.0, 15.0, 15.0, 17.0])  # round 3: a 1 s, b 2 s
    monkeypatch.setattr(bench.time, 'perf_counter', lambda: next(clock))
    steps = {'a': lambda: calls.append('a'), 'b': lambda: calls.append('b')}
    seconds = bench.time_round_robin(steps, torch.device('cpu'), num_warmup=1, num_iters=1, num_rounds=3)
    assert calls == ['a', 'b'] + ['a', 'b'] * 3  # warm-up of each, then the steps alternate
    assert seconds == {'a': 1.0, 'b': 2.0}  # the spike in round 2 is not the median


def test_bad_counts_are_refused():
    with pytest.raises(ValueError, match='num_iters'):
        bench.time_round_robin({'a': lambda: None}, torch.device('cpu'), num_iters=0)


def test_a_baseline_and_its_models_are_timed_in_turn(monkeypatch):
    order = []
    real_prepare = bench._prepare

    def recording_prepare(name, cfg, baseline, model_kwargs):
        case = real_prepare(name, cfg, baseline, model_kwargs)
        infer = case.infer
        case.infer = lambda: (order.append(name), infer())[1]
        return case

    monkeypatch.setattr(bench, '_prepare', recording_prepare)
    cfg = bench.BenchConfig(device='cpu', batch_size=1, img_size=32, num_warmup=1, num_iters=1, num_rounds=2,
                            train=False)
    results = bench.run_bench(cfg, ['vit_tiny_cope'])
    assert [r.model for r in results] == ['vit_tiny_patch16_224', 'vit_tiny_cope']
    assert all(r.infer_img_s > 0 for r in results)
    base, ours = 'vit_tiny_patch16_224', 'vit_tiny_cope'
    assert order == [base, ours] + [base, ours] * 2  # one warm-up each, then two alternating rounds
