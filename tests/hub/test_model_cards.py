""" MODEL_CARDS.md parsing, the generated Hub README, and the measured model stats it states. """
import ast
import os
import re
from pathlib import Path

import pytest
import yaml

from conftest import first_registered_per_module
from timm_posembed.cli import main as cli_main
from timm_posembed.hub.card_format import (
    REQUIRED_SECTIONS, ModelCardError, dataset_from_tag, find_card, load_model_cards, parse_model_cards,
)
from timm_posembed.hub.cards import HubCardFacts, render_hub_readme
from timm_posembed.measure.complexity import measure_model
from timm_posembed.models import list_model_info

MODEL_NAMES = [info.name for info in list_model_info()]
RUN_SLOW = bool(os.environ.get('TIMM_POSEMBED_SLOW'))


def card_text(names='vit_tiny_cope', **replace) -> str:
    """A well-formed card; ``replace`` swaps a whole section's text (heading included) by its key."""
    parts = {
        'header': f'<!-- card: {names} -->\n## COPE ViT\n',
        'description': '### Description\nA ViT with complex order position embedding.\n',
        'papers': ('### Papers\n- Wang et al., *Encoding word order in complex embeddings*, ICLR 2020.\n'
                   '  https://arxiv.org/abs/1912.12333\n- Dosovitskiy et al., ViT, ICLR 2021.\n'),
        'recipe': ('### Recipe\n```bash\n# a shell comment, not a heading\n## nor this\n'
                   'python train.py --model vit_tiny_cope\n```\n#### Augmentation\nRandAugment.\n'),
        'results': ("### Results\nAll on Tiny-ImageNet.\n#### Paper's numbers\n| model | top-1 |\n|---|---|\n"
                    '| COPE | 34.0 |\n#### Our numbers\nnone yet: needs a GPU run (benchmarks/).\n'),
        'extra': '### Layer table\n| layer | params |\n|---|---|\n',
        'limitations': '### Limitations\nFixed input size.\n',
        'citation': ('### Citation\n```bibtex\n@inproceedings{wang2020, title={Encoding word order}}\n```\n'
                     '```bibtex\n@article{vit, title={An Image is Worth 16x16 Words}}\n```\n'),
    }
    parts.update(replace)
    return '# Model cards\n\nIntro text with `<!-- card: ... -->` quoted inline.\n\n' + '\n'.join(parts.values())


def test_parses_a_well_formed_card():
    cards = parse_model_cards(card_text('vit_tiny_cope vit_small_cope'))
    assert set(cards) == {'vit_tiny_cope', 'vit_small_cope'}
    card = cards['vit_tiny_cope']
    assert card is cards['vit_small_cope'] and card.title == 'COPE ViT' and card.line == 5
    assert [h for h, _ in card.sections] == ['Description', 'Papers', 'Recipe', 'Results', 'Layer table',
                                             'Limitations', 'Citation']
    assert '# a shell comment, not a heading' in card.section('Recipe')  # fenced lines are not headings
    assert card.results_part("Paper's numbers").endswith('| COPE | 34.0 |')
    assert card.results_part('Our numbers').startswith('none yet')
    assert card.paper_lines() == [
        'Wang et al., *Encoding word order in complex embeddings*, ICLR 2020. https://arxiv.org/abs/1912.12333',
        'Dosovitskiy et al., ViT, ICLR 2021.']
    assert card.citations() == ['@inproceedings{wang2020, title={Encoding word order}}',
                                '@article{vit, title={An Image is Worth 16x16 Words}}']
    assert [h for h, _ in card.extra_sections] == ['Layer table']


def test_card_ends_at_next_top_level_heading_and_tag_cards_win():
    text = card_text('vit_tiny_cope') + '\n## Appendix\nnot part of the card\n\n' + card_text(
        'vit_tiny_cope.special').split('\n\n', 2)[2].replace('## COPE ViT', '## Special tag')
    cards = parse_model_cards(text)
    assert 'Appendix' not in cards['vit_tiny_cope'].section('Citation')
    assert find_card(cards, 'vit_tiny_cope.special').title == 'Special tag'
    assert find_card(cards, 'vit_tiny_cope.tiny_imagenet').title == 'COPE ViT'


BROKEN_CARDS = {
    'missing section': (dict(limitations=''), "missing subsections ['Limitations']"),
    'wrong order': (dict(papers='', description='### Papers\n- p\n### Description\nd\n'),
                    'the required ones go Description, Papers'),
    'extra before results': (dict(recipe='### Recipe\nr\n### Notes\nn\n'),
                             "extra subsections ['Notes'] come before \"### Results\""),
    "no 'our numbers'": (dict(results="### Results\n#### Paper's numbers\n34.0\n"),
                         'has no "#### Our numbers" heading'),
    'empty numbers': (dict(results="### Results\n#### Paper's numbers\n34.0\n#### Our numbers\n\n"),
                      '"#### Our numbers" is empty'),
    'citation without bibtex': (dict(citation='### Citation\nWang et al. 2020\n'), 'has no ```bibtex block'),
    'empty section': (dict(limitations='### Limitations\n\n'), "subsections ['Limitations'] are empty"),
    'no title': (dict(header='<!-- card: vit_tiny_cope -->\n### Title at the wrong level\n'),
                 'expected a "## Title" line'),
    'text before description': (dict(header='<!-- card: vit_tiny_cope -->\n## T\nstray text\n'),
                                'text between "## T" and "### Description"'),
    'bad name': (dict(header='<!-- card: ViT Tiny -->\n## T\n'), 'are not model names'),
}


@pytest.mark.parametrize('case', sorted(BROKEN_CARDS))
def test_malformed_card_is_refused_with_where_and_what(case):
    replace, expected = BROKEN_CARDS[case]
    with pytest.raises(ModelCardError) as info:
        parse_model_cards(card_text(**replace), source='CARDS.md')
    msg = str(info.value)
    assert expected in msg
    assert 'CARDS.md:5' in msg  # names the file and line of the card


def test_a_model_has_one_card():
    with pytest.raises(ModelCardError, match='vit_tiny_cope already has a card at line 5'):
        parse_model_cards(card_text() + '\n' + card_text().split('\n\n', 2)[2])


def test_missing_card_error_says_how_to_add_one():
    cards = parse_model_cards(card_text('vit_small_cope'))
    with pytest.raises(ModelCardError) as info:
        find_card(cards, 'vit_tiny_cope.tiny_imagenet')
    msg = str(info.value)
    assert 'no card for vit_tiny_cope.tiny_imagenet' in msg and '"<!-- card: vit_tiny_cope -->"' in msg
    assert all(s in msg for s in REQUIRED_SECTIONS) and 'vit_small_cope' in msg


@pytest.mark.parametrize('tag, dataset', [
    ('in1k', 'imagenet-1k'), ('in100', 'imagenet-100'), ('tiny_imagenet', 'tiny-imagenet'),
    ('augreg_in21k_ft_in1k', 'imagenet-1k'), ('in12k', 'imagenet-12k'), ('mine', None), ('in1000', None)])
def test_dataset_from_tag(tag, dataset):
    assert dataset_from_tag(tag) == dataset


def test_measured_stats_match_timms_published_card():
    # timm's Hub card for coat_lite_tiny.in1k states Params (M) 5.7, GMACs 1.6, Activations (M) 11.6, 224 x 224
    stats = measure_model('coat_lite_tiny')
    assert stats.params == 5_721_960
    assert round(stats.gmacs, 1) == 1.6 and round(stats.activations_m, 1) == 11.6
    assert stats.input_size == (3, 224, 224) and stats.num_features == 320
    assert stats.feature_shapes == [(1, 64, 56, 56), (1, 128, 28, 28), (1, 256, 14, 14), (1, 320, 7, 7)]


def test_renders_timm_card_format():
    card = parse_model_cards(card_text())['vit_tiny_cope']
    stats = measure_model('vit_tiny_cope.tiny_imagenet', img_size=64)
    facts = HubCardFacts(model_name='vit_tiny_cope.tiny_imagenet', repo_id='org/vit_tiny_cope.tiny_imagenet',
                         create_name='hf-hub:org/vit_tiny_cope.tiny_imagenet', license='apache-2.0',
                         datasets=['tiny-imagenet'], stats=stats, paper_ids=['arXiv:1912.12333'])
    readme = render_hub_readme(card, facts)
    front = yaml.safe_load(readme.split('---\n')[1])
    assert front == {'tags': ['image-classification', 'timm', 'timm_posembed'], 'library_name': 'timm',
                     'license': 'apache-2.0', 'pipeline_tag': 'image-classification', 'datasets': ['tiny-imagenet']}
    order = ['# Model card for vit_tiny_cope.tiny_imagenet', '## Model Details', '## Model Usage',
             '### Image Classification', '### Feature Map Extraction', '### Image Embeddings', '## Training Recipe',
             '### Augmentation', '## Results', "### Paper's numbers", '### Our numbers', '## Layer table',
             '## Limitations', '## Citation']
    positions = [readme.index(f'\n{h}\n') for h in order]
    assert positions == sorted(positions), 'sections out of order'
    assert f'  - Params (M): {stats.params / 1e6:.1f}' in readme and '  - Image size: 64 x 64' in readme
    assert '  - Wang et al., *Encoding word order in complex embeddings*, ICLR 2020.' in readme
    assert '# a shell comment, not a heading' in readme  # code in the recipe is kept verbatim
    assert readme.count('\nimport timm_posembed  # registers this model with timm\n') == 3
    assert readme.count("'hf-hub:org/vit_tiny_cope.tiny_imagenet'") == 3
    for shape in stats.feature_shapes:
        assert f'    # {shape}' in readme
    assert readme.count('```bibtex') == 2


@pytest.mark.parametrize('arch', MODEL_NAMES)
def test_every_model_has_a_well_formed_card(arch):
    """MODEL_CARDS.md (the real one) has a card for every registered model, and it parses."""
    card = find_card(load_model_cards(), arch)
    assert card.citations() and card.section('Description').strip()


FIDELITY_COLUMNS = ['aspect', "authors' code", 'ours', 'status', 'test', "option for the authors' behaviour"]
_CITED_TEST = re.compile(r'`(tests/[\w/]+\.py)::(\w+)(?:\[[^\]`]*\])?`')
_ROOT = Path(__file__).resolve().parents[2]


def _test_functions(path: str) -> set:
    tree = ast.parse((_ROOT / path).read_text())
    return {node.name for node in tree.body if isinstance(node, ast.FunctionDef)}


def fidelity_problems(card) -> list:
    """What is wrong with a card's Fidelity section: a ``#### layer`` subsection per layer whose first table has
    FIDELITY_COLUMNS; a row's status is 'equal ...' (citing the tests that check it, which must exist) or
    'differs ...' (with the option that restores the authors' behaviour, or 'none' and why)."""
    fidelity = dict(card.extra_sections).get('Fidelity')
    if fidelity is None:
        return ['no "### Fidelity" section']
    problems = []
    layers = re.split(r'^#### ', fidelity, flags=re.M)[1:]
    if not layers:
        problems.append('no "#### <layer>" subsection')
    for layer in layers:
        name = layer.splitlines()[0]
        lines = layer.splitlines()
        first = next((i for i, line in enumerate(lines) if line.startswith('|')), len(lines))
        table = []  # the subsection's first table (measurements may follow it)
        for line in lines[first:]:
            if not line.startswith('|'):
                break
            table.append(line)
        rows = [[c.strip() for c in line.strip().strip('|').split('|')] for line in table]
        if not rows or rows[0] != FIDELITY_COLUMNS:
            problems.append(f'{name}: no table with the columns {FIDELITY_COLUMNS}')
            continue
        for row in rows[2:]:
            if len(row) != len(FIDELITY_COLUMNS):
                problems.append(f'{name}: row {row[0]!r} has {len(row)} cells')
                continue
            cells = dict(zip(FIDELITY_COLUMNS, row))
            cited = _CITED_TEST.findall(cells['test'])
            if cells['status'].startswith('equal'):
                if not cited:
                    problems.append(f'{name}: {row[0]!r} is equal but cites no test')
            elif cells['status'].startswith('differs'):
                if not cells["option for the authors' behaviour"]:
                    problems.append(f'{name}: {row[0]!r} differs but names no option (or none and why)')
            else:
                problems.append(f'{name}: {row[0]!r} status must start with "equal" or "differs"')
            for path, test in cited:
                if not (_ROOT / path).is_file() or test not in _test_functions(path):
                    problems.append(f'{name}: {row[0]!r} cites {path}::{test}, which does not exist')
    return problems


CARD_TITLES = sorted({card.title: name for name, card in load_model_cards().items()}.items())


@pytest.mark.parametrize('title, arch', CARD_TITLES, ids=[t for t, _ in CARD_TITLES])
def test_every_card_has_a_fidelity_table_per_layer_citing_existing_tests(title, arch):
    assert fidelity_problems(find_card(load_model_cards(), arch)) == []


def test_fidelity_check_finds_each_problem():
    cited = '`tests/hub/test_model_cards.py::test_fidelity_check_finds_each_problem`'
    good = ('### Fidelity\n#### Layer\n| ' + ' | '.join(FIDELITY_COLUMNS) + ' |\n|---|---|---|---|---|---|\n'
            f'| hash | h | h | equal (exact) | {cited} | — |\n'
            '| key | k | k2 | differs: faster | | none (no such key there) |\n')
    assert fidelity_problems(parse_model_cards(card_text(extra=good))['vit_tiny_cope']) == []
    broken = {
        'no "### Fidelity" section': '### Notes\nn\n',
        'no "#### <layer>" subsection': '### Fidelity\ntext only\n',
        'no table with the columns': good.replace('| status |', '| state |'),
        'is equal but cites no test': good.replace(cited, ''),
        'cites tests/hub/test_model_cards.py::test_missing, which does not exist': good.replace(
            'test_fidelity_check_finds_each_problem`', 'test_missing`'),
        'differs but names no option': good.replace('none (no such key there)', ''),
        'status must start with': good.replace('differs: faster', 'close'),
    }
    for expected, extra in broken.items():
        problems = fidelity_problems(parse_model_cards(card_text(extra=extra))['vit_tiny_cope'])
        assert any(expected in p for p in problems), (expected, problems)


@pytest.mark.parametrize('arch', MODEL_NAMES)
def test_real_card_renders(arch, capsys):
    if not RUN_SLOW and arch not in first_registered_per_module(MODEL_NAMES):
        pytest.skip('rendering measures the model; one per family by default, all with TIMM_POSEMBED_SLOW=1')
    assert cli_main(['card', arch]) == 0, capsys.readouterr().err
    readme = capsys.readouterr().out
    for heading in ('## Model Details', '## Model Usage', '## Results', "### Paper's numbers", '### Our numbers',
                    '## Limitations', '## Citation'):
        assert f'\n{heading}\n' in readme


def test_snippets_use_the_registry_name_only_when_it_loads_this_repo(tmp_path):
    from timm_posembed.hub.cards import hub_readme
    cards = tmp_path / 'MODEL_CARDS.md'
    cards.write_text(card_text())
    registered = 'timm-posembed/vit_tiny_cope.tiny_imagenet'  # what vit_tiny_cope.tiny_imagenet's cfg names
    readme = hub_readme('vit_tiny_cope', 'tiny_imagenet', True, registered, {'num_classes': 200}, cards_path=cards)
    assert "timm.create_model('vit_tiny_cope.tiny_imagenet', pretrained=True)" in readme
    # another repo, or arguments the registry name would not rebuild: only hf-hub: loads these weights
    readme = hub_readme('vit_tiny_cope', 'tiny_imagenet', True, 'me/vit_tiny_cope.x', {}, cards_path=cards)
    assert "timm.create_model('hf-hub:me/vit_tiny_cope.x', pretrained=True)" in readme
    readme = hub_readme('vit_tiny_cope', 'tiny_imagenet', True, registered, {'img_size': 64}, cards_path=cards)
    assert f"timm.create_model('hf-hub:{registered}', pretrained=True)" in readme
