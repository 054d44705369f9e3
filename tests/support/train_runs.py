""" train.py output folders (``args.yaml`` + ``summary.csv``, written the way timm's train.py writes them) for the
tests of ``report`` and the paper tables. """
from pathlib import Path

import yaml

SUMMARY_HEADER = 'epoch,train_loss,eval_loss,eval_top1,eval_top5,lr'


def write_run(root: Path, name: str, model: str, top1s, model_kwargs=None, epochs=None, num_classes=100,
              seed=42) -> Path:
    """A train.py output folder whose epoch ``e`` reached ``top1s[e]``; ``epochs`` planned (default: as many)."""
    run = root / name
    run.mkdir(parents=True)
    args = {'model': model, 'model_kwargs': model_kwargs or {}, 'epochs': epochs or len(top1s),
            'cooldown_epochs': 0, 'num_classes': num_classes, 'seed': seed, 'lr': 0.001}
    (run / 'args.yaml').write_text(yaml.safe_dump(args))
    lines = [SUMMARY_HEADER] + [f'{e},{3.0 - 0.1 * e},{2.0 - 0.1 * e},{t},{min(100.0, t + 10)},0.001'
                                for e, t in enumerate(top1s)]
    (run / 'summary.csv').write_text('\n'.join(lines) + '\n')
    return run
