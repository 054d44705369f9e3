""" Exporting one model of each family: ``torch.export`` (with a save/load round trip) and ONNX through both of
torch's exporters, run in onnxruntime and compared with PyTorch.

Every export is traced with a batch of 2 and run with a batch of 3: the batch dimension must stay dynamic.
"""
import io

import numpy as np
import pytest
import timm
import torch

import timm_posembed  # noqa: F401

onnx = pytest.importorskip('onnx')
onnxruntime = pytest.importorskip('onnxruntime')

# model -> the smallest input it takes (CoaT-Lite's last stage is 1/32 of the input, the ViTs' patches 16 px)
FAMILY_MODELS = {
    'vit_tiny_cope': 32,
    'vit_tiny_supertoken_conv': 32,
    'vit_small_conv_embed': 32,
    'coat_lite_clustering': 64,
}
ATOL = 1e-4  # float32 through different kernels; the models' logits are O(1)


def _model_and_inputs(name: str):
    torch.manual_seed(0)
    img_size = FAMILY_MODELS[name]
    # exportable=True is what timm's onnx_export.py passes; the models need nothing else for export
    model = timm.create_model(name, img_size=img_size, num_classes=5, exportable=True).eval()
    trace_input = torch.randn(2, 3, img_size, img_size)
    run_input = torch.randn(3, 3, img_size, img_size)
    with torch.no_grad():
        expected = model(run_input)
    return model, trace_input, run_input, expected


@pytest.fixture(scope='module', params=list(FAMILY_MODELS))
def exported(request):
    """(model, trace input, run input, PyTorch output, the ExportedProgram after torch.export.save/load)."""
    model, trace_input, run_input, expected = _model_and_inputs(request.param)
    program = torch.export.export(model, (trace_input,), dynamic_shapes=({0: torch.export.Dim('batch', max=1024)},))
    buffer = io.BytesIO()
    torch.export.save(program, buffer)
    buffer.seek(0)
    return request.param, trace_input, run_input, expected, torch.export.load(buffer)


def _onnxruntime_output(path, x: torch.Tensor) -> np.ndarray:
    onnx.checker.check_model(str(path), full_check=True)
    session = onnxruntime.InferenceSession(str(path))
    output, = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    return output


def test_torch_export_round_trip(exported):
    name, _, run_input, expected, program = exported
    with torch.no_grad():
        output = program.module()(run_input)
    torch.testing.assert_close(output, expected, atol=ATOL, rtol=0)


def test_onnx_dynamo_exporter(exported, tmp_path):
    """torch.onnx.export(dynamo=True) from the reloaded ExportedProgram (torch.export's graph, as `--dynamo`)."""
    name, trace_input, run_input, expected, program = exported
    torch.onnx.export(program, (trace_input,), str(tmp_path / f'{name}.onnx'), dynamo=True,
                      input_names=['input0'], output_names=['output0'])
    np.testing.assert_allclose(_onnxruntime_output(tmp_path / f'{name}.onnx', run_input), expected.numpy(),
                               atol=ATOL, rtol=0)


@pytest.mark.parametrize('name', FAMILY_MODELS)
def test_onnx_torchscript_exporter(name, tmp_path):
    model, trace_input, run_input, expected = _model_and_inputs(name)
    torch.onnx.export(model, (trace_input,), str(tmp_path / f'{name}.onnx'), dynamo=False,
                      input_names=['input0'], output_names=['output0'],
                      dynamic_axes={'input0': {0: 'batch'}, 'output0': {0: 'batch'}})
    np.testing.assert_allclose(_onnxruntime_output(tmp_path / f'{name}.onnx', run_input), expected.numpy(),
                               atol=ATOL, rtol=0)


@pytest.mark.parametrize('name', list(FAMILY_MODELS))
def test_torch_compile_one_graph(name):
    """torch.compile(fullgraph=True) captures each model whole (backend='eager': dynamo's capture, without the
    minutes inductor's C++ compilation would add on a CPU)."""
    model, trace_input, run_input, expected = _model_and_inputs(name)
    compiled = torch.compile(model, backend='eager', fullgraph=True)
    with torch.no_grad():
        compiled(trace_input)
        torch.testing.assert_close(compiled(run_input), expected, atol=ATOL, rtol=0)


def _naflex_model_and_batches():
    from naflex_batches import packed
    torch.manual_seed(0)
    model = timm.create_model('naflexvit_tiny_patch16_cope', depth=2, num_classes=5).eval()
    # traced with 2 images of 12 patch slots, run with 3 of other sizes (one on the 14x14 reference grid)
    trace = packed([torch.randn(3, 32, 64), torch.randn(3, 48, 48)], pad_to=12)
    run = packed([torch.randn(3, 16, 80), torch.randn(3, 64, 32), torch.randn(3, 224, 224)])
    with torch.no_grad():
        expected = model(run)
    return model, trace, run, expected


def test_naflex_packed_batch_torch_export_round_trip():
    """NaFlex input (a dict of patches, coordinates and validity), batch and sequence length dynamic."""
    model, trace, run, expected = _naflex_model_and_batches()
    batch, seq = torch.export.Dim('batch', max=1024), torch.export.Dim('seq', min=2, max=4096)
    program = torch.export.export(model, (trace,), dynamic_shapes=({k: {0: batch, 1: seq} for k in trace},))
    buffer = io.BytesIO()
    torch.export.save(program, buffer)
    buffer.seek(0)
    with torch.no_grad():
        output = torch.export.load(buffer).module()(run)
    torch.testing.assert_close(output, expected, atol=ATOL, rtol=0)


def test_naflex_packed_batch_torch_compile_one_graph():
    model, trace, run, expected = _naflex_model_and_batches()
    compiled = torch.compile(model, backend='eager', fullgraph=True)
    with torch.no_grad():
        compiled(trace)
        torch.testing.assert_close(compiled(run), expected, atol=ATOL, rtol=0)
