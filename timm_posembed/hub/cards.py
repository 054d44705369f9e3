""" Model cards: a model's card from ``MODEL_CARDS.md`` (see ``timm_posembed.card_format``) laid out as a Hub
``README.md`` the way timm's Hub cards look (front matter, ``# Model card for ...``, ``## Model Details``,
``## Model Usage`` with timm and transformers snippets, ``## Citation``), with the card's recipe, results (paper's and
ours, labelled), limitations and extra sections in between. ``hub_readme`` gathers the facts (registry cfg, measured
stats) and renders; ``render_hub_readme`` only lays them out.
"""
import html
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Sequence, Union

import torch
import yaml
from timm.models import get_pretrained_cfg

from ..measure.complexity import ModelStats, measure_model
from ..version import __version__
from .card_format import ModelCard, ModelCardError, dataset_from_tag, find_card, load_model_cards, shift_headings

__all__ = ['HubCardFacts', 'render_hub_readme', 'hub_readme', 'check_dataset_id', 'markdown_text']


@dataclass(frozen=True)
class HubCardFacts:
    """What a Hub README states besides the card's text; measured or taken from the published config."""
    model_name: str  # arch.tag
    repo_id: str
    create_name: str  # what the snippets pass to timm.create_model: 'arch.tag' when the registry points at repo_id
    license: str
    datasets: Sequence[str]
    stats: ModelStats
    paper_ids: Sequence[str] = ()
    weights_note: str = ''  # where the weights come from, e.g. "EMA weights of model_best.pth.tar (epoch 299)"
    extra_details: Dict[str, str] = field(default_factory=dict)


# A Hub dataset id: NAME or ORG/NAME of letters, digits, "-", "_" and "." (what the Hub accepts, 96 characters each).
_DATASET_ID = re.compile(r'[A-Za-z0-9][A-Za-z0-9._-]{0,95}(/[A-Za-z0-9][A-Za-z0-9._-]{0,95})?')


def check_dataset_id(value: str, what: str = '--dataset') -> str:
    """``value`` if it is a Hub dataset id (the card's front matter lists it and its Model Details state it)."""
    if not isinstance(value, str) or not _DATASET_ID.fullmatch(value) or '..' in value:
        raise ModelCardError(f'{what} {value!r} is not a Hub dataset id; expected NAME or ORG/NAME of letters, '
                             f'digits, "-", "_" and ".", e.g. imagenet-1k or zh-plus/tiny-imagenet')
    return value


# "_" between letters or digits (model_best.pth) never starts emphasis (CommonMark), so only other ones are escaped
_MARKDOWN_SPECIAL = re.compile(r'([\\`*\[\]|~]|(?<![^\W_])_|_(?![^\W_]))')


def markdown_text(value: str) -> str:
    """``value`` as literal text on one Markdown line: line breaks (``\\n``, ``\\r``, U+2028, ...) and other control
    characters become spaces, HTML is escaped, and the characters of inline markup (emphasis, code, links, images,
    table cells, strikethrough) are backslash-escaped, so a name read from a file can neither start a block nor
    inject a link, image or tag. (The value follows a list item's label, so line-start markup such as # or > does
    not apply.)"""
    flat = ''.join(' ' if (ord(c) < 32 or 0x7f <= ord(c) < 0xa0 or c in '\u2028\u2029\x85') else c for c in value)
    return _MARKDOWN_SPECIAL.sub(r'\\\1', html.escape(flat, quote=False))


def _front_matter(facts: 'HubCardFacts') -> str:
    """The YAML front matter, written by a YAML emitter (every value quoted as it needs)."""
    front: Dict[str, Any] = {
        'tags': ['image-classification', 'timm', 'timm_posembed'],
        'library_name': 'timm',
        'license': facts.license,
        'pipeline_tag': 'image-classification',
    }
    if facts.datasets:
        front['datasets'] = list(facts.datasets)
    return '---\n' + yaml.safe_dump(front, sort_keys=False, allow_unicode=True, default_flow_style=False) + '---'


def _usage(create_name: str, stats: ModelStats) -> str:
    """Three self-contained snippets (classification, feature maps, embeddings) sharing one preamble."""

    def snippet(create_kwargs: str, body: str) -> str:
        return (
            '```python\n'
            'import timm\n'
            'import timm_posembed  # registers this model with timm\n'
            'import torch\n'
            'from PIL import Image\n'
            '\n'
            f"model = timm.create_model('{create_name}', pretrained=True{create_kwargs}).eval()\n"
            '# the resize, crop and normalisation the weights were trained with\n'
            'preprocess = timm.data.create_transform(**timm.data.resolve_model_data_config(model), is_training=False)\n'
            "batch = preprocess(Image.open('image.jpg').convert('RGB')).unsqueeze(0)  # (1, C, H, W)\n"
            '\n'
            f'{body}\n'
            '```\n'
        )

    shapes = '\n'.join(f'    # {tuple(s)}' for s in stats.feature_shapes)
    classify = snippet('', (
        'with torch.no_grad():\n'
        '    probabilities = model(batch).softmax(dim=-1)\n'
        'top5_prob, top5_class = probabilities.topk(5)'))
    features = snippet(', features_only=True', (
        'with torch.no_grad():\n'
        '    feature_maps = model(batch)  # one tensor per stage, at 1 image:\n'
        f'{shapes}'))
    embeddings = snippet(', num_classes=0', (
        'with torch.no_grad():\n'
        f'    embedding = model(batch)  # pooled, (1, {stats.num_features}): the classifier is removed\n'
        f'    tokens = model.forward_features(batch)  # unpooled, {tuple(stats.unpooled_shape)}\n'
        '    same_embedding = model.forward_head(tokens, pre_logits=True)'))
    return (f'### Image Classification\n{classify}\n'
            f'### Feature Map Extraction\n{features}\n'
            f'### Image Embeddings\n{embeddings}')


def _transformers_usage(repo_id: str) -> str:
    """The same weights through transformers' timm wrapper, which builds the model with timm from config.json."""
    return (
        '### With 🤗 transformers\n'
        '```python\n'
        'import timm_posembed  # registers the architecture with timm, which transformers\' timm wrapper calls\n'
        'from transformers import AutoModelForImageClassification, pipeline\n'
        '\n'
        f"classifier = pipeline('image-classification', model='{repo_id}')\n"
        "predictions = classifier('image.jpg')  # [{'label': ..., 'score': ...}, ...], best first\n"
        '\n'
        f"model = AutoModelForImageClassification.from_pretrained('{repo_id}')  # the same logits as timm's model\n"
        '```\n'
    )


def render_hub_readme(card: ModelCard, facts: HubCardFacts) -> str:
    """The Hub ``README.md`` for ``facts.model_name`` from its ``card``, in timm's card format."""
    stats = facts.stats
    details = [
        '- **Model Type:** Image classification / feature backbone',
        '- **Model Stats:**',
        f'  - Params (M): {stats.params_m:.1f}',
        f'  - GMACs: {stats.gmacs:.2f}' if stats.gmacs < 1 else f'  - GMACs: {stats.gmacs:.1f}',
        f'  - Activations (M): {stats.activations_m:.1f}',
        f'  - Image size: {stats.input_size[1]} x {stats.input_size[2]}',
        f'  - Classes: {stats.num_classes}',
        '- **Papers:**',
    ]
    details += [f'  - {p}' for p in card.paper_lines()]
    if facts.paper_ids:
        details.append(f'- **Paper ids:** {", ".join(facts.paper_ids)}')
    if facts.datasets:
        details.append(f'- **Dataset:** {", ".join(markdown_text(d) for d in facts.datasets)}')
    if facts.weights_note:
        details.append(f'- **Weights:** {markdown_text(facts.weights_note)}')
    details.append(f'- **Code:** timm_posembed {__version__} (`pip install timm-posembed`; '
                   f'`import timm_posembed` registers the model with timm)')
    for key, value in facts.extra_details.items():
        details.append(f'- **{markdown_text(key)}:** {markdown_text(value)}')

    parts = [_front_matter(facts), f'# Model card for {facts.model_name}', '',
             f'**{card.title}**', '', card.section('Description').strip(), '',
             '## Model Details', '\n'.join(details), '',
             '## Model Usage', _usage(facts.create_name, stats).rstrip(), '',
             _transformers_usage(facts.repo_id).rstrip(), '',
             '## Training Recipe', shift_headings(card.section('Recipe').strip(), -1), '',
             # the whole section, so its "#### Paper's numbers" / "#### Our numbers" labels stay with their numbers
             '## Results', shift_headings(card.section('Results').strip(), -1), '']
    for heading, body in card.extra_sections:
        parts += [f'## {heading}', shift_headings(body.strip(), -1), '']
    parts += ['## Limitations', shift_headings(card.section('Limitations').strip(), -1), '', '## Citation']
    parts += [f'```bibtex\n{c}\n```' for c in card.citations()]
    return '\n'.join(parts).rstrip('\n') + '\n'


def _registry_name_loads(arch: str, tag: str, tag_registered: bool, repo_id: str,
                         model_kwargs: Mapping[str, Any]) -> bool:
    """Whether ``create_model('arch.tag', pretrained=True)`` loads exactly this repo's weights into this
    architecture: the registry points at the repo and the published arguments are the cfg's defaults."""
    if not tag_registered:
        return False
    cfg = get_pretrained_cfg(f'{arch}.{tag}')
    if cfg.hf_hub_id != repo_id:
        return False
    defaults = {'num_classes': cfg.num_classes, 'in_chans': cfg.input_size[0], 'img_size': tuple(cfg.input_size[1:])}
    for key, value in model_kwargs.items():
        if key not in defaults:
            return False
        value = (value, value) if key == 'img_size' and isinstance(value, int) else value
        if (tuple(value) if isinstance(value, (list, tuple)) else value) != defaults[key]:
            return False
    return True


def hub_readme(
        arch: str,
        tag: str,
        tag_registered: bool,
        repo_id: str,
        model_kwargs: Mapping[str, Any],
        dataset: Optional[str] = None,
        weights_note: str = '',
        cards_path: Optional[Union[str, Path]] = None,
        model: Optional[torch.nn.Module] = None,
) -> str:
    """The README.md for ``arch.tag`` published at ``repo_id`` (a ``ModelCardError`` if MODEL_CARDS.md has no card).
    ``model`` is the built model to measure (built from ``model_kwargs`` when not given)."""
    card = find_card(load_model_cards(cards_path), f'{arch}.{tag}')
    dataset = check_dataset_id(dataset) if dataset else dataset_from_tag(tag)
    if not dataset:
        raise ModelCardError(f'cannot tell the dataset of tag {tag!r} (timm-style tags name it, like in1k or in100); '
                           f'pass --dataset NAME (a Hub dataset id such as imagenet-1k)')
    name = f'{arch}.{tag}' if tag_registered else arch
    overlay = None if tag_registered else dict(tag=tag)
    cfg = get_pretrained_cfg(name)
    if not cfg.license:
        raise ModelCardError(f'the pretrained cfg of {name} declares no license; add license= to its default_cfgs')
    kwargs = dict(model_kwargs)
    if overlay:
        kwargs['pretrained_cfg_overlay'] = overlay
    stats = measure_model(name, model=model, **kwargs)
    create_name = (f'{arch}.{tag}' if _registry_name_loads(arch, tag, tag_registered, repo_id, model_kwargs)
                   else f'hf-hub:{repo_id}')
    facts = HubCardFacts(
        model_name=f'{arch}.{tag}',
        repo_id=repo_id,
        create_name=create_name,
        license=cfg.license,
        datasets=[dataset],
        stats=stats,
        paper_ids=list(cfg.paper_ids or []),
        weights_note=weights_note,
    )
    return render_hub_readme(card, facts)
