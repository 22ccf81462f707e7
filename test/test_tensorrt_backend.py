"""Backend 'tensorrt': refused with what to do where it cannot run (here: CI has no GPU and
no TensorRT), and, where TensorRT and a CUDA GPU exist, its engines against PyTorch: fp32
within 1e-3 of torch's patch logits, fp16 within 2e-2 with the same peaks, engines cached."""

import numpy as np
import pytest
import torch

import gem_ros.gem as gem
from gem_ros.gem.backends import (
    TENSORRT_MISSING,
    TENSORRT_NEEDS_CUDA,
    backend_problem,
    tensorrt_available,
)
from gem_ros.settings import METHODS

from tiny_model import CONFIG, WEIGHTS

HAS_TRT_GPU = tensorrt_available() and torch.cuda.is_available()
NO_TRT_GPU = 'needs TensorRT and a CUDA GPU: ' + (
    'no CUDA device here' if tensorrt_available() else TENSORRT_MISSING
)


def test_tensorrt_is_refused_here_with_what_to_do():
    if HAS_TRT_GPU:
        pytest.skip('TensorRT and a GPU are here: the tests below run it')
    with pytest.raises(gem.ModelLoadError) as error:
        gem.load_model(str(CONFIG), str(WEIGHTS), backend='tensorrt', device='cpu')
    expected = TENSORRT_MISSING if not tensorrt_available() else TENSORRT_NEEDS_CUDA
    assert str(error.value) == expected.format(device='cpu')
    with pytest.raises(gem.ModelLoadError, match="backend 'tensorrt'"):
        gem.check_source(str(CONFIG), str(WEIGHTS), device='cpu', backend='tensorrt')
    assert backend_problem('torch', torch.device('cpu')) is None


def _image(seed=0):
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 60, (96, 128, 3), dtype=np.uint8)
    image[20:60, 30:80] = (220, 30, 30)
    return image


@pytest.mark.skipif(not HAS_TRT_GPU, reason=NO_TRT_GPU)
@pytest.mark.timeout(1200)
@pytest.mark.parametrize('precision, tolerance', [('fp32', 1e-3), ('fp16', 2e-2)])
@pytest.mark.parametrize('method', METHODS)
def test_tensorrt_matches_torch(method, precision, tolerance, tmp_path):
    kw = dict(method=method, device='cuda')
    reference = gem.load_model(str(CONFIG), str(WEIGHTS), **kw)
    model = gem.load_model(
        str(CONFIG),
        str(WEIGHTS),
        backend='tensorrt',
        precision=precision,
        graph_cache_dir=tmp_path,
        **kw,
    )
    queries = ['red', 'blue']
    batch = torch.cat([reference.preprocess(_image(s)) for s in range(3)])
    a = reference.patch_logits(batch, queries)
    b = model.patch_logits(batch, queries)
    assert (a - b).abs().max() < tolerance, (a - b).abs().max()
    for x, y in zip(reference.locate(_image(), queries), model.locate(_image(), queries)):
        assert (x.peak_x, x.peak_y) == (y.peak_x, y.peak_y)
    engines = list(tmp_path.glob('*.engine'))
    assert len(engines) == 1 and precision in engines[0].name
    again = gem.load_model(
        str(CONFIG),
        str(WEIGHTS),
        backend='tensorrt',
        precision=precision,
        graph_cache_dir=tmp_path,
        **kw,
    )
    assert (again.patch_logits(batch, queries) - b).abs().max() == 0
    assert list(tmp_path.glob('*.engine')) == engines  # built once, then read from the cache


@pytest.mark.skipif(not HAS_TRT_GPU, reason=NO_TRT_GPU)
@pytest.mark.timeout(1200)
@pytest.mark.parametrize('method', ['gem', 'scclip'])
def test_tensorrt_fp16_gives_torchs_embedding_and_presence_on_its_own_stream(method, tmp_path):
    """Not peaks alone: the image embedding (presence reads it), found and confidence; and the
    engine runs on a stream of its own, not the legacy default one."""
    kw = dict(method=method, device='cuda')
    reference = gem.load_model(str(CONFIG), str(WEIGHTS), **kw)
    model = gem.load_model(
        str(CONFIG),
        str(WEIGHTS),
        backend='tensorrt',
        precision='fp16',
        graph_cache_dir=tmp_path,
        **kw,
    )
    size = (112, 112) if method == 'scclip' else (96, 128)
    pixels = torch.randn(2, 3, *size, device='cuda')
    _, a = reference.features(pixels, True)
    _, b = model.features(pixels, True)
    assert (a - b).abs().max() < 2e-2
    assert model.backend._stream is not None and model.backend._stream.cuda_stream != 0
    for x, y in zip(reference.locate(_image(), ['red']), model.locate(_image(), ['red'])):
        assert x.found == y.found and x.confidence == pytest.approx(y.confidence, abs=2e-2)


@pytest.mark.skipif(not HAS_TRT_GPU, reason=NO_TRT_GPU)
@pytest.mark.timeout(1200)
def test_the_fp16_engine_has_fp16_layers_and_its_norms_stayed_fp32(tmp_path):
    """The engine inspector's view (layer formats, built with detailed verbosity): products
    in fp16, and no norm, reduction or LayerNorm layer fed fp16."""
    import json

    import tensorrt as trt

    model = gem.load_model(
        str(CONFIG),
        str(WEIGHTS),
        backend='tensorrt',
        precision='fp16',
        device='cuda',
        graph_cache_dir=tmp_path,
    )
    model.patch_logits(torch.randn(1, 3, 96, 128, device='cuda'), ['red'])
    engine, _ = next(iter(model.backend._runners.values()))
    inspector = engine.create_engine_inspector()
    info = json.loads(inspector.get_engine_information(trt.LayerInformationFormat.JSON))
    layers = [layer for layer in info['Layers'] if isinstance(layer, dict)]
    formats = lambda layer: ' '.join(str(t.get('Format/Datatype', '')) for t in layer['Inputs'])  # noqa: E731
    assert any('FP16' in formats(layer) or 'Half' in formats(layer) for layer in layers)
    norms = [
        layer
        for layer in layers
        if any(k in layer.get('Name', '') for k in ('ReduceL2', 'LayerNormalization', 'Sqrt'))
    ]
    assert norms, [layer.get('Name') for layer in layers][:50]
    for layer in norms:
        assert 'FP16' not in formats(layer) and 'Half' not in formats(layer), layer


def _vit_b16_cached() -> bool:
    try:
        gem.loading._resolve_weights(
            __import__('open_clip'), 'ViT-B-16', 'openai', None
        )  # a local file, or raises
    except Exception:  # noqa: BLE001 - not in the cache (and nothing is downloaded here)
        return False
    return True


@pytest.mark.skipif(not HAS_TRT_GPU, reason=NO_TRT_GPU)
@pytest.mark.timeout(1800)
def test_vit_b16_with_clips_weights_in_fp16_keeps_torchs_answers(tmp_path, monkeypatch):
    """The tiny models lack CLIP's outlier activations; the real weights have them."""
    monkeypatch.setenv('HF_HUB_OFFLINE', '1')
    if not _vit_b16_cached():
        pytest.skip("ViT-B-16's openai weights are not in the local cache")
    reference = gem.load_model('ViT-B-16', 'openai', device='cuda')
    model = gem.load_model(
        'ViT-B-16',
        'openai',
        device='cuda',
        backend='tensorrt',
        precision='fp16',
        graph_cache_dir=tmp_path,
    )
    queries = ['red', 'blue']
    image = np.repeat(np.repeat(_image(), 5, axis=0), 5, axis=1)  # 480 x 640
    for x, y in zip(reference.locate(image, queries), model.locate(image, queries)):
        assert x.found == y.found and x.confidence == pytest.approx(y.confidence, abs=2e-2)
        assert x.score == pytest.approx(y.score, abs=2e-2)
