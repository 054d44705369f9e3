""" The super-token ViT exports to ONNX with both torch exporters and runs in onnxruntime like PyTorch. """
import pytest
import timm
import torch

import timm_posembed  # noqa: F401  (registers the models)

onnxruntime = pytest.importorskip('onnxruntime')
pytest.importorskip('onnx')


@pytest.fixture(scope='module')
def model_and_input():
    torch.manual_seed(0)
    model = timm.create_model('vit_tiny_supertoken_conv', img_size=32, num_classes=10).eval()
    return model, torch.randn(2, 3, 32, 32)


@pytest.mark.parametrize('dynamo', [False, True], ids=['legacy', 'dynamo'])
def test_onnx_export_matches_pytorch(tmp_path, model_and_input, dynamo):
    if dynamo:
        pytest.importorskip('onnxscript')
    model, x = model_and_input
    path = tmp_path / 'model.onnx'
    # the legacy exporter used to fail here on col2im (F.fold with a traced output size)
    torch.onnx.export(model, (x,), str(path), dynamo=dynamo, input_names=['x'], output_names=['logits'])
    session = onnxruntime.InferenceSession(str(path), providers=['CPUExecutionProvider'])
    (out,) = session.run(None, {'x': x.numpy()})
    with torch.no_grad():
        expected = model(x)
    torch.testing.assert_close(torch.from_numpy(out), expected, rtol=1e-4, atol=1e-4)
