"""The successors' own inference pipeline against SCLIP's code: sliding windows
(`GemModel.slide_logits`) and PAMR (`gem.pamr`), on the goldens of
test/fixtures/successors/slide_pamr_reference.* (copied from ../shared/reference-successors;
the README there writes out the math). And what the pipeline costs: its budgets, and that
PAMR in strips is PAMR over the whole frame.
"""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import gem_ros.gem as gem
from gem_ros.gem import refine, windows

FIXTURES = Path(__file__).parent / "fixtures"
GOLDEN = FIXTURES / "successors" / "slide_pamr_reference"
CASES = json.loads(GOLDEN.with_suffix(".json").read_text())["cases"]
REFERENCE = np.load(GOLDEN.with_suffix(".npz"))


@pytest.fixture(scope="module")
def sclip():
    return gem.load_model(
        str(FIXTURES / "gem-tiny-test.json"),
        str(FIXTURES / "gem-tiny-test.pt"),
        method="sclip",
        device="cpu",
    )


@pytest.mark.parametrize(
    "case", [c for c in CASES if c["key"].startswith("pamr")], ids=lambda c: c["key"]
)
def test_pamr_matches_sclips_code(case):
    key = case["key"]
    image = torch.from_numpy(REFERENCE[f"{key}_image"])
    logits = torch.from_numpy(REFERENCE[f"{key}_logits"])
    refined = gem.pamr(image, logits, case["steps"], case["dilations"])
    assert refined.shape == REFERENCE[f"{key}_refined"].shape
    np.testing.assert_allclose(refined.numpy(), REFERENCE[f"{key}_refined"], atol=1e-4)
    # PAMR moved the maps: a no-op would not match (the golden differs from plain upsampling).
    upsampled = gem.pamr(image, logits, 0, case["dilations"]).numpy()
    assert np.abs(upsampled - REFERENCE[f"{key}_refined"]).max() > 1e-2


@pytest.mark.parametrize(
    "case", [c for c in CASES if c["key"].startswith("slide")], ids=lambda c: c["key"]
)
def test_slide_logits_match_sclips_forward_slide(sclip, case):
    key = case["key"]
    pixels = torch.from_numpy(REFERENCE[f"{key}_input"])
    np.testing.assert_allclose(
        sclip.encode_text(case["queries"]).numpy(), REFERENCE[f"{key}_text_emb"], atol=1e-5
    )
    logits = sclip.slide_logits(
        pixels,
        case["queries"],
        crop=case["crop"],
        stride=case["stride"],
        out_size=tuple(case["ori"]),
        pamr_steps=case["pamr_steps"],
        pamr_dilations=tuple(case["pamr_stride"]),
    )
    assert logits.shape == REFERENCE[f"{key}_logits"].shape
    np.testing.assert_allclose(logits.numpy(), REFERENCE[f"{key}_logits"], atol=1e-4)


def test_the_windows_cover_the_input_with_the_last_pulled_back_inside():
    boxes = windows.window_boxes(336, 448, 224, 112)
    assert len(boxes) == windows.window_count(336, 448, 224, 112) == 2 * 3
    assert boxes[-1] == (112, 336, 224, 448)  # the last row and column end at the border
    assert all(y2 - y1 == 224 and x2 - x1 == 224 for y1, y2, x1, x2 in boxes)
    # An input smaller than the crop is one window, the input itself.
    assert windows.window_boxes(100, 150, 224, 112) == [(0, 100, 0, 150)]
    # A grid that does not divide: 300 = 224 + 76, so two rows, the second pulled back to 76.
    assert [b[:2] for b in windows.window_boxes(300, 224, 224, 112)] == [(0, 224), (76, 300)]


def test_pamr_in_strips_gives_pamr_over_the_whole_frame():
    generator = torch.Generator().manual_seed(0)
    image = torch.randn(1, 3, 200, 150, generator=generator)
    logits = torch.randn(1, 3, 13, 10, generator=generator)
    whole = refine.pamr(image, logits, 4, (2, 5))
    # A budget so small that the frame runs in many strips and one query at a time.
    strips = refine.pamr(image, logits, 4, (2, 5), max_stack_values=60_000)
    np.testing.assert_allclose(strips.numpy(), whole.numpy(), atol=1e-5)
    # That budget gives strips of 20 rows (the halo, 4 steps x dilation 5, is the floor):
    # 10 strips, each refined with 20 rows of its neighbours on either side.


def test_pamr_refuses_what_is_not_pamr():
    image, logits = torch.zeros(1, 3, 8, 8), torch.zeros(1, 2, 2, 2)
    for steps, dilations, words in [
        (-1, (8, 16), "steps"),
        (51, (8, 16), "steps"),
        (10, (), "1 to 8 dilations"),
        (10, (0,), "dilations must be integers"),
        (10, (8, 65), "dilations must be integers"),
    ]:
        with pytest.raises(ValueError, match=words):
            gem.pamr(image, logits, steps, dilations)
    with pytest.raises(ValueError, match=r"image \[B, C, H, W\]"):
        gem.pamr(torch.zeros(3, 8, 8), logits)


def test_slide_meets_its_budgets_before_it_runs(sclip):
    image = np.zeros((448, 448, 3), np.uint8)
    with pytest.raises(ValueError, match="multiple of the patch size"):
        sclip.locate_batch([image], ["cat"], input_size=448, slide=100)
    # 2048 x 1024 input at crop 64, stride 32: 63 x 31 windows, far over MAX_WINDOWS.
    wide = np.zeros((1024, 2048, 3), np.uint8)
    with pytest.raises(gem.InputBudgetError, match="windows"):
        sclip.locate_batch(
            [wide], ["cat"], input_size=1024, max_input_pixels=2048 * 1024, slide=64,
            slide_stride=32,
        )  # fmt: skip


def test_locate_with_slide_and_pamr_gives_the_pipelines_maps(sclip):
    """locate_batch's maps with slide and PAMR are slide_logits' at the image's size: its
    heatmap is their min-max, its mask their threshold, its peak their argmax."""
    rng = np.random.default_rng(1)
    image = rng.integers(0, 255, (150, 260, 3), np.uint8)
    queries = ["cat", "sky"]
    (dets,) = sclip.locate_batch(
        [image], queries, input_size=224, slide=224, slide_stride=112, pamr_steps=3,
        return_heatmaps=True, presence_rule="off",
    )  # fmt: skip
    pixels = sclip.preprocess(image, 224)
    maps = sclip.slide_logits(pixels, queries, 224, 112, out_size=(150, 260), pamr_steps=3)[0]
    for det, m in zip(dets, maps):
        m = m.numpy()
        heat = (m - m.min()) / (m.max() - m.min())
        np.testing.assert_allclose(det.heatmap, heat, atol=1e-4)
        assert det.mask.shape == (150, 260)
        np.testing.assert_array_equal(det.mask, heat > 0.5)
    # Without them, the maps are the plain forward's: different.
    (plain,) = sclip.locate_batch(
        [image], queries, input_size=224, return_heatmaps=True, presence_rule="off"
    )
    assert np.abs(plain[0].heatmap - dets[0].heatmap).max() > 1e-2


def test_the_map_keeps_the_windows_tokens_averaged_on_the_inputs_grid(sclip):
    """With sliding windows, a frame's tokens for the map are its windows' tokens averaged on
    the input's patch grid: each patch's cosine with a text is then the mean of its windows'
    cosines; the same with a query active (the windows run once) and with none."""
    rng = np.random.default_rng(2)
    image = rng.integers(0, 255, (150, 260, 3), np.uint8)
    options = dict(input_size=224, slide=112, slide_stride=64, presence_rule="off")
    kept = {}
    for queries in ([], ["cat"]):
        out = [None]
        sclip.locate_batch([image], [queries], tokens_out=out, **options)
        kept[len(queries)] = out[0][0]
    np.testing.assert_allclose(kept[0], kept[1], atol=1e-5)
    pixels = sclip.preprocess(image, 224)  # [1, 3, 224, 384]: 2 x 5 windows of 112
    p, text = sclip.patch_size, sclip.encode_text(["cat"])[0]
    rows, cols = pixels.shape[-2] // p, pixels.shape[-1] // p
    total, count = torch.zeros(rows, cols), torch.zeros(rows, cols)
    mean = torch.zeros(rows, cols, kept[0].shape[-1])
    for y1, y2, x1, x2 in windows.window_boxes(*pixels.shape[-2:], 112, 64):
        tokens = sclip.patch_tokens(pixels[..., y1:y2, x1:x2])[0]
        cells = (slice(y1 // p, y2 // p), slice(x1 // p, x2 // p))
        total[cells] += tokens @ text
        mean[cells] += tokens
        count[cells] += 1
    assert kept[0].shape[:2] == (rows, cols)
    assert count.max() > 1  # the windows overlap: an average, not one window's tokens
    # The mean of unit vectors, renormalised: its cosine is the mean cosine over its norm.
    mean /= count[..., None]
    norm = mean.norm(dim=-1)
    cos = kept[0] @ text.numpy()
    np.testing.assert_allclose(cos * norm.numpy(), (total / count).numpy(), atol=1e-4)
    # Not the whole input's tokens.
    whole = [None]
    sclip.locate_batch([image], [[]], tokens_out=whole, input_size=224)
    assert np.abs(whole[0][0] - kept[0]).max() > 1e-2


@pytest.mark.timeout(600)
def test_node_peak_memory_with_slide_and_pamr_on_the_largest_frame(tmp_path):
    """The largest frame the default budget takes (max_image_pixels: 3840 x 2160) with 5
    queries, sliding windows and PAMR: the authors' stack alone would be [5, 16, 2160, 3840]
    float32 (2.6 GB); refined at MAX_PAMR_PIXELS, in strips within MAX_STACK_VALUES, the
    node's peak stays under 768 MiB over idle (measured: 377 MiB)."""
    from gem_ros.srv import SetQueries

    from hostile_inputs import read_kib, reset_peak_rss
    from ros_helpers import NodeProcess, RosClient, image_msg, random_rgb
    from tiny_model import CONFIG, WEIGHTS

    client = RosClient()
    node = NodeProcess(
        tmp_path / 'node.log',
        f'model:={CONFIG}',
        f'pretrained:={WEIGHTS}',
        'device:=cpu',
        'method:=sclip',
        'slide:=224',
        'refine:=pamr',
        threads=2,
    )
    try:
        node.wait_for_log('loaded model', timeout=120)
        client.wait_matched()
        queries = ['cat', 'dog', 'cup', 'table', 'sky']
        answer = client.call(client.set_queries_client, SetQueries.Request(queries=queries))
        assert answer.success, answer.message
        client.publish_and_wait(image_msg(random_rgb(2160, 3840, seed=1), 'rgb8'), timeout=240)
        idle = read_kib(node.proc.pid, 'VmRSS') / 1024
        reset_peak_rss(node.proc.pid)
        msg = image_msg(random_rgb(2160, 3840, seed=2), 'rgb8')
        result = client.publish_and_wait(msg, timeout=240)
        peak = read_kib(node.proc.pid, 'VmHWM') / 1024
        print(f'sclip slide+pamr 3840x2160, 5 queries: idle {idle:.0f} MiB, peak {peak:.0f} MiB')
        assert [r.query for r in result.results] == queries
        assert peak - idle < 768, (idle, peak)
    finally:
        node.stop()
        client.close()
