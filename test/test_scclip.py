"""SC-CLIP beyond its goldens (test_successors_parity.py): LOF in bounded memory with the
same arithmetic, the right patch on non-square grids (where the authors' index mapping picks
other patches or none), batches computed per image, the block rule for other depths, what a
too-small input says, and the node's peak memory at the default input budget."""

import numpy as np
import pytest
import torch

import gem_ros.gem as gem
from gem_ros.gem import scclip
from gem_ros.settings import check_setting
from gem_ros.srv import SetQueries

from hostile_inputs import read_kib, reset_peak_rss
from ros_helpers import NodeProcess, RosClient, image_msg, random_rgb
from tiny_model import CONFIG, WEIGHTS

pytestmark = pytest.mark.timeout(300)


def test_blocked_distances_are_the_authors_arithmetic(monkeypatch):
    x = torch.randn(2, 300, 96)
    whole = torch.stack([torch.norm(x[b][:, None] - x[b][None], dim=2, p=2) ** 2 for b in (0, 1)])
    monkeypatch.setattr(scclip, 'LOF_BLOCK_BYTES', 7 * 300 * 96 * 4)  # 7 rows at a time
    assert torch.equal(scclip.squared_distances(x), whole)


def test_lof_matches_the_authors_formula_per_image():
    torch.manual_seed(0)
    x = torch.randn(2, 120, 16)
    x[0, 7] += 6.0  # a clear outlier in the first image only
    mask = scclip.lof_outliers(x, 30, 0.05)
    for b in (0, 1):  # lof_pytorch of their code, one image at a time
        d = torch.norm(x[b][:, None] - x[b][None], dim=2, p=2) ** 2
        kd, ki = torch.topk(d, k=31, largest=False)
        kd, ki = kd[:, 1:], ki[:, 1:]
        reach = torch.max(kd, kd[:, -1].unsqueeze(1).expand_as(kd))
        lrd = 30 / torch.nan_to_num(reach.mean(dim=1), nan=1e-6)
        lof = (lrd[ki] / lrd.unsqueeze(1)).mean(dim=1)
        expected = lof > torch.quantile(lof, 0.95)
        assert torch.equal(mask[b], expected)
    assert mask[0, 7] and mask.sum(dim=1).tolist() == [6, 6]


def test_non_square_grids_repair_the_flagged_patch():
    grid = (3, 5)  # 3 rows, 5 columns
    patches = torch.randn(1, 15, 2, generator=torch.Generator().manual_seed(0))
    outliers = torch.zeros(1, 15, dtype=torch.bool)
    outliers[0, 7] = True  # row 1, column 2
    out = scclip.replace_outliers(patches, outliers, grid)
    changed = (out != patches).any(dim=-1)[0].nonzero().flatten().tolist()
    assert changed == [7]
    neighbours = [1, 2, 3, 6, 8, 11, 12, 13]  # the 8 around (1, 2)
    assert torch.allclose(out[0, 7], patches[0, neighbours].mean(dim=0))
    # The authors' mapping, (i // rows, i % rows), sends index 7 to (2, 1) = index 11: the
    # wrong patch; index 14 to (4, 2): outside a 3-row grid.
    assert (7 // grid[0], 7 % grid[0]) == (2, 1) and 14 // grid[0] >= grid[0]


def _model(**kw):
    return gem.load_model(str(CONFIG), str(WEIGHTS), method='scclip', device='cpu', **kw)


def test_a_non_square_input_runs_and_batches_are_per_image():
    model = _model()
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (224, 320, 3), dtype=np.uint8) for _ in range(2)]
    pixels = torch.cat([model.preprocess(i, input_size=224) for i in images])
    assert pixels.shape[-2:] == (224, 320)
    both = model.patch_logits(pixels, ['cat', 'dog'])
    assert both.shape == (2, 2, 14, 20) and torch.isfinite(both).all()
    for k in (0, 1):
        alone = model.patch_logits(pixels[k : k + 1], ['cat', 'dog'])[0]
        assert (both[k] - alone).abs().max() < 1e-5
    assert (both[0] - both[1]).abs().max() > 1e-3  # two images, two answers


def test_blocks_for_other_depths_and_bad_settings():
    assert scclip.resolve_blocks('auto', 12) == (8, 3, 3, 10)  # the authors'
    assert scclip.resolve_blocks('auto', 24) == (16, 6, 6, 20)  # ViT-L-14
    assert scclip.resolve_blocks('auto', 8) == (5, 2, 2, 7)  # the tiny test model
    assert scclip.resolve_blocks(' 6, 2, 1, 5 ', 8) == (6, 2, 1, 5)
    with pytest.raises(ValueError, match='does not fit a 8-block ViT'):
        scclip.resolve_blocks('8,3,3,10', 8)
    with pytest.raises(ValueError, match='at least 4 blocks'):
        scclip.resolve_blocks('auto', 3)
    assert _model().encoder.scclip.blocks == (5, 2, 2, 7)
    with pytest.raises(ValueError, match='scclip_blocks'):
        _model(scclip_blocks='1,2')
    assert 'scclip_blocks' in check_setting('scclip_blocks', 'x,y')  # refused when set


def test_settings_change_the_result():
    pixels = torch.randn(1, 3, 224, 224)
    base = _model().patch_logits(pixels, ['cat'])
    for change in (
        dict(scclip_res_cls=0.0),
        dict(scclip_threshold=0.0),
        dict(scclip_lof_neighbors=10),
        dict(scclip_lof_contamination=0.3),
        dict(scclip_blocks='4,1,1,6'),
    ):
        assert (_model(**change).patch_logits(pixels, ['cat']) - base).abs().max() > 1e-4, change


def test_too_few_patches_say_what_to_do():
    model = _model()
    with pytest.raises(ValueError, match='this input has 16 patches; feed a larger input'):
        model.patch_logits(torch.randn(1, 3, 64, 64), ['cat'])


@pytest.mark.timeout(600)
def test_node_peak_memory_at_the_default_budget(tmp_path):
    """ViT-B-16 at the default budget (2 x 448 x 448 input pixels: 1568 patches for a 2:1
    frame): the authors' LOF alone would build a 1568 x 1568 x 768 float tensor (7.6 GB); the
    blocked one keeps the node's peak under 1 GB over idle (measured: 430 to 540 MiB)."""
    client = RosClient()
    node = NodeProcess(
        tmp_path / 'node.log',
        'model:=ViT-B-16',
        'pretrained:=none',
        'device:=cpu',
        'method:=scclip',
        'presence:=off',
        threads=2,
    )
    try:
        node.wait_for_log('loaded model', timeout=300)
        client.wait_matched()
        answer = client.call(client.set_queries_client, SetQueries.Request(queries=['cat']))
        assert answer.success
        msg = image_msg(random_rgb(448, 896, seed=1), 'rgb8')
        client.publish_and_wait(msg, timeout=120)  # warm: the first frame sizes the caches
        idle = read_kib(node.proc.pid, 'VmRSS') / 1024
        reset_peak_rss(node.proc.pid)
        msg = image_msg(random_rgb(448, 896, seed=2), 'rgb8')
        result = client.publish_and_wait(msg, timeout=120)
        peak = read_kib(node.proc.pid, 'VmHWM') / 1024
        print(f'scclip ViT-B-16 1568 patches: idle {idle:.0f} MiB, peak {peak:.0f} MiB')
        assert result.results[0].query == 'cat'
        assert peak - idle < 1024, (idle, peak)
    finally:
        node.stop()
        client.close()
