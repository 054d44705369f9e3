""" timm's own model tests (tests/test_models.py of the installed timm's sdist), run on this package's models.

The conftest plugin deselects every parametrization that is not one of our models; the test functions below are
timm's, unchanged.
"""
import fnmatch

import timm_conformance

_upstream = timm_conformance.import_timm_model_tests()
# timm's tests and the fixtures they use (e.g. cfg_device) must be visible in this module to be collected.
globals().update({k: v for k, v in vars(_upstream).items() if not k.startswith('__')})


def test_conformance_suite_covers_every_registered_model():
    # Guards the selection plugin: if timm renames its tests or the registry hook stops working, the
    # conformance run would silently test nothing.
    ours = timm_conformance.our_model_names()
    assert ours, 'no timm_posembed models registered'
    for test_name in ('test_model_forward', 'test_model_backward', 'test_model_default_cfgs_non_std',
                      'test_model_forward_intermediates', 'test_model_forward_fx', 'test_model_forward_torchscript'):
        fn = getattr(_upstream, test_name)
        marks = [m for m in fn.pytestmark if m.name == 'parametrize' and m.args[0] == 'model_name']
        names = {n.split('.')[0] for n in marks[0].args[1]}
        # timm leaves its own NaFlex ViTs out of TorchScript ('*naflex*': their forward takes a dict), and ours
        # with them; every other filter must let our models through
        timm_excludes = getattr(_upstream, 'EXCLUDE_JIT_FILTERS', []) if 'torchscript' in test_name else []
        expected = {n for n in ours if not any(fnmatch.fnmatch(n, f) for f in timm_excludes)}
        assert 'torchscript' not in test_name or expected & {n for n in ours if 'naflex' not in n}
        missing = expected - names
        assert not missing, f'{test_name} does not select {sorted(missing)}'
