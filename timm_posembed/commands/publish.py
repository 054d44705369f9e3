""" ``timm-posembed publish CHECKPOINT --model NAME --out DIR``: a train.py checkpoint -> a Hub repo folder, uploaded
unless ``--dry-run``. The work is in ``timm_posembed.publish``; this module only parses and reports. """
from ._errors import fail
from ._model_kwargs import ModelKwargsAction


def register(subparsers) -> None:
    p = subparsers.add_parser(
        'publish',
        help='turn a train.py checkpoint into a Hugging Face Hub repo (config.json, model.safetensors, README.md)',
        description='Reads CHECKPOINT (model_best.pth.tar / last.pth.tar from timm\'s train.py, or a .safetensors '
                    'file), checks it loads strictly into --model, writes the Hub folder to --out (config.json, '
                    'model.safetensors, README.md generated from MODEL_CARDS.md) and uploads it with huggingface_hub '
                    'unless --dry-run. The token comes from HF_TOKEN or `hf auth login` and is never printed.',
    )
    p.add_argument('checkpoint', help='train.py checkpoint (weights_only load) or .safetensors file')
    p.add_argument('--model', required=True, help='the model it was trained as, e.g. vit_tiny_cope (or NAME.TAG)')
    p.add_argument('--tag', default=None, help='pretrained tag (default: the model\'s default tag)')
    p.add_argument('--repo-id', default=None,
                   help='Hub repo ORG/NAME.TAG (default: the registered hf_hub_id under this package\'s org)')
    p.add_argument('--out', required=True,
                   help='folder to write: new, empty, or (with --overwrite) the output of an earlier publish')
    p.add_argument('--ema', action='store_true', help='publish the EMA weights (state_dict_ema) of the checkpoint')
    p.add_argument('--dry-run', action='store_true', help='write the folder only, do not upload')
    p.add_argument('--private', action='store_true', help='create the Hub repo as private')
    p.add_argument('--overwrite', action='store_true',
                   help='replace an --out that an earlier publish wrote (holding nothing but config.json, '
                        'model.safetensors, README.md); any other folder is refused untouched')
    p.add_argument('--label-names', default=None, metavar='FILE',
                   help='class names in classifier order (one per line, or a JSON list); default: from the '
                        'train.py run\'s --class-map or class folders when they are on this machine')
    p.add_argument('--dataset', default=None,
                   help='dataset for the card (Hub id, e.g. imagenet-1k); default: from the tag (in1k, in100, ...)')
    p.add_argument('--model-kwargs', nargs='*', default={}, action=ModelKwargsAction, metavar='KEY=VALUE',
                   help='model arguments train.py did not record (e.g. img_size=64 for a .safetensors file)')
    p.add_argument('--cards', default=None, metavar='MODEL_CARDS.md',
                   help='model cards file (default: the one this package carries)')
    p.add_argument('--allow-nonfinite', action='store_true',
                   help='publish weights that hold NaN or Inf (refused by default: the model would output NaN)')
    p.add_argument('--commit-message', default=None, help='Hub commit message')
    p.set_defaults(func=run)


def run(args) -> int:
    from ..hub.card_format import ModelCardError
    from ..hub.checkpoints import PublishError
    from ..hub.publish import publish_checkpoint, upload_hub_folder

    try:
        result = publish_checkpoint(
            args.checkpoint, args.model, args.out, tag=args.tag, repo_id=args.repo_id, use_ema=args.ema,
            overwrite=args.overwrite, label_names=args.label_names, dataset=args.dataset,
            model_kwargs=args.model_kwargs, cards_path=args.cards,
            allow_nonfinite=args.allow_nonfinite, log=print,
        )
    except (PublishError, ModelCardError) as e:
        return fail('publish', str(e))
    print(f'wrote {result.out}: {", ".join(f.name for f in result.files)}')
    print(f'  model {result.model_name}, {result.weights}; label names: {result.label_source}')
    if not result.tag_registered:
        print(f'  note: tag {result.model_name.split(".", 1)[1]!r} is not registered for this model, so '
              f'create_model({result.model_name!r}) will not find it; load it with '
              f"create_model('hf-hub:{result.repo_id}', pretrained=True) or register the tag in the model's "
              f'default_cfgs with hf_hub_id={result.repo_id!r}')
    if args.dry_run:
        print(f'dry run: nothing uploaded. To upload: timm-posembed publish {args.checkpoint} --model {args.model} '
              f'... without --dry-run, or `hf upload {result.repo_id} {result.out}`')
        return 0
    try:
        url = upload_hub_folder(result.out, result.repo_id, private=args.private, commit_message=args.commit_message)
    except PublishError as e:
        return fail('publish', str(e))
    print(f'uploaded to https://huggingface.co/{result.repo_id} ({url})')
    return 0
