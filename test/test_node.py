"""gem_node end to end: the real node in its own process, the tiny model, Fast DDS between.

One node serves the whole module; each test sets the queries it needs.
"""

import array
import time

import cv2
import numpy as np
import pytest
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import String

from gem_ros.srv import SetQueries

from ros_helpers import (
    TINY_MODEL,
    NodeProcess,
    RosClient,
    a_status_later,
    close_ros,
    header,
    image_msg,
    random_rgb,
    wait_until_offered,
)

pytestmark = pytest.mark.timeout(120)
TINY_WEIGHTS = dict(p.split(':=') for p in TINY_MODEL[:2])  # model and pretrained


@pytest.fixture(scope='module')
def ros_client():
    client = RosClient()
    # Published before the node exists: the node must still hear it (transient local).
    client.latched_queries_pub.publish(String(data='red; blue'))
    yield client
    client.close()


@pytest.fixture(scope='module')
def gem_node(ros_client, tmp_path_factory):
    node = NodeProcess(
        tmp_path_factory.mktemp('gem_node') / 'node.log',
        *TINY_MODEL,
        'queries:=[zebra]',
        'input_size:=96',
        'use_compressed:=true',
        'overlay_max_rate_hz:=0.0',
    )
    try:
        node.wait_for_log('loaded model')
        ros_client.wait_matched(compressed=True)
        yield node
    finally:
        node.stop()


@pytest.fixture
def client(gem_node, ros_client):
    return ros_client


def set_queries(client, *queries):
    response = client.call(client.set_queries_client, SetQueries.Request(queries=list(queries)))
    assert response.success, response.message
    return response


def check_result(result, msg, queries):
    assert result.header.frame_id == msg.header.frame_id
    assert result.header.stamp == msg.header.stamp
    assert [r.query for r in result.results] == list(queries)
    assert result.inference_seconds > 0
    for r in result.results:
        mask = r.mask
        assert (mask.encoding, mask.width, mask.height, mask.step) == (
            'mono8',
            msg.width,
            msg.height,
            msg.width,
        )
        assert mask.header == msg.header
        pixels = np.frombuffer(mask.data, np.uint8).reshape(mask.height, mask.width)
        assert set(np.unique(pixels)) <= {0, 255}
        assert r.area == np.count_nonzero(pixels)
        assert 0 <= r.peak_x < msg.width and 0 <= r.peak_y < msg.height
        assert -1.0 <= r.score <= 1.0
        # The peak is the heatmap's maximum, so it is in the mask and in the box.
        assert pixels[r.peak_y, r.peak_x] == 255
        box = r.bbox
        assert box.x_offset <= r.peak_x < box.x_offset + box.width
        assert box.y_offset <= r.peak_y < box.y_offset + box.height
        assert box.x_offset + box.width <= msg.width and box.y_offset + box.height <= msg.height
        ys, xs = np.nonzero(pixels)
        assert (box.x_offset, box.y_offset) == (xs.min(), ys.min())


def test_node_declares_the_parameter_table(client):
    from rcl_interfaces.srv import ListParameters

    from gem_ros.ros.parameters import PARAMETERS

    lister = client.node.create_client(ListParameters, '/gem/list_parameters')
    assert lister.wait_for_service(timeout_sec=30)
    names = set(client.call(lister, ListParameters.Request()).result.names)
    assert names - {'use_sim_time', 'start_type_description_service'} == {
        spec.name for spec in PARAMETERS
    }


def test_startup_parameter_then_latched_prompt(gem_node, client):
    assert 'active queries: [zebra]' in gem_node.log()
    client.wait_for(
        lambda: client.active and client.active[-1] == 'red; blue',
        'the latched prompt to become active',
    )


def test_one_result_per_frame_with_the_frame_header(client):
    set_queries(client, 'red', 'blue')
    for i, (height, width) in enumerate([(48, 64), (50, 30), (480, 640)]):
        msg = image_msg(random_rgb(height, width, seed=i), 'rgb8', frame_id=f'cam{i}')
        check_result(client.publish_and_wait(msg), msg, ['red', 'blue'])


def yuv422(rgb: np.ndarray, order: str) -> np.ndarray:
    """HxWx2 packed 4:2:2 bytes of an RGB image, UYVY or YUYV order."""
    yuv = cv2.cvtColor(rgb, cv2.COLOR_RGB2YUV)
    y, u, v = yuv[..., 0], yuv[:, ::2, 1], yuv[:, ::2, 2]
    packed = np.empty(rgb.shape[:2] + (2,), np.uint8)
    chroma = np.stack([u, v], axis=2).reshape(rgb.shape[0], -1)
    if order == 'uyvy':
        packed[..., 0], packed[..., 1] = chroma, y
    else:
        packed[..., 0], packed[..., 1] = y, chroma
    return packed


RGB = random_rgb(24, 32, seed=7)
ENCODED = {
    'bgr8': RGB[..., ::-1],
    'rgba8': np.dstack([RGB, np.full(RGB.shape[:2], 255, np.uint8)]),
    'bgra8': np.dstack([RGB[..., ::-1], np.zeros(RGB.shape[:2], np.uint8)]),
    'mono8': RGB[..., 0],
    'mono16': RGB[..., 0].astype(np.uint16) * 257,
    'yuv422': yuv422(RGB, 'uyvy'),
    'uyvy': yuv422(RGB, 'uyvy'),
    'yuv422_yuy2': yuv422(RGB, 'yuyv'),
    'yuyv': yuv422(RGB, 'yuyv'),
}


@pytest.mark.parametrize('encoding', sorted(ENCODED))
def test_every_encoding_gets_a_result(client, encoding):
    set_queries(client, 'red', 'blue')
    msg = image_msg(ENCODED[encoding], encoding)
    check_result(client.publish_and_wait(msg), msg, ['red', 'blue'])


def compressed_msg(rgb, extension='.png'):
    ok, encoded = cv2.imencode(extension, rgb[..., ::-1])
    assert ok
    return CompressedImage(
        header=header(), format=extension[1:], data=array.array('B', encoded.tobytes())
    )


def test_compressed_image_gets_a_result(client):
    set_queries(client, 'red', 'blue')
    msg = compressed_msg(RGB)
    result = client.publish_and_wait(msg)
    assert result.header == msg.header
    assert [(r.mask.width, r.mask.height) for r in result.results] == [(32, 24)] * 2


def test_overlay_is_rgb8_with_the_frame_header(client):
    set_queries(client, 'red')
    msg = image_msg(random_rgb(40, 56, seed=3), 'rgb8', frame_id='overlay')
    client.publish_and_wait(msg)
    overlay = client.wait_for(
        lambda: next((o for o in client.overlays if o.header == msg.header), None),
        'the overlay of the frame',
    )
    # drawn enlarged by a whole factor (480 / 40 = 12) so that its text is legible
    assert (overlay.encoding, overlay.width, overlay.height) == ('rgb8', 56 * 12, 40 * 12)
    assert len(overlay.data) == 56 * 12 * 40 * 12 * 3


def test_publish_overlay_false_gives_no_overlay(client):
    """With publish_overlay false a frame gets its result and no overlay. The overlay of the
    next frame, once it is true again, comes after where the first one's would have been
    (one publisher, in order), so its arrival shows none was sent."""
    set_queries(client, 'red')
    without, again = (image_msg(random_rgb(40, 56, seed=s), 'rgb8') for s in (4, 5))
    assert client.set_parameters(publish_overlay=False).successful
    try:
        client.publish_and_wait(without)
    finally:
        assert client.set_parameters(publish_overlay=True).successful
    client.publish_and_wait(again)
    client.wait_for(
        lambda: any(o.header == again.header for o in client.overlays), 'the overlay of the frame'
    )
    assert not [o for o in client.overlays if o.header == without.header]


def test_service_replaces_dedupes_and_clears_queries(gem_node, client):
    response = set_queries(client, 'cat', ' dog ', 'cat', '')
    assert response.message == 'active queries: [cat; dog]'
    client.wait_for(lambda: client.active[-1] == 'cat; dog', 'the echo of cat; dog')
    msg = image_msg(RGB, 'rgb8')
    check_result(client.publish_and_wait(msg), msg, ['cat', 'dog'])

    set_queries(client)  # an empty list clears
    client.wait_for(lambda: client.active[-1] == '', 'the echo of no queries')
    a_status_later(client)  # /diagnostics counts the frames the node is offered
    # Without queries a frame is dropped before conversion: a broken one logs no error.
    good = image_msg(RGB, 'rgb8', frame_id='no-queries')
    broken = image_msg(RGB, 'rgb8', frame_id='no-queries')
    broken.data = broken.data[:-1]
    sent = time.monotonic()
    for msg in (good, broken, good):
        client.image_pub.publish(msg)
    wait_until_offered(client, sent)  # they reached the node before the queries do
    set_queries(client, 'cat')
    msg = image_msg(RGB, 'rgb8')
    check_result(client.publish_and_wait(msg), msg, ['cat'])
    assert not [r for r in client.results if r.header.frame_id == 'no-queries']
    assert "frame_id 'no-queries'" not in gem_node.log()


def test_service_rejects_only_blank_queries(client):
    set_queries(client, 'cat')
    response = client.call(client.set_queries_client, SetQueries.Request(queries=[' ', '']))
    assert not response.success
    assert 'blank' in response.message
    msg = image_msg(RGB, 'rgb8')
    check_result(client.publish_and_wait(msg), msg, ['cat'])


@pytest.mark.parametrize('latched', [False, True], ids=['volatile', 'latched'])
def test_topic_replaces_queries(client, latched):
    publisher = client.latched_queries_pub if latched else client.queries_pub
    text = 'red mug; person, , person' if latched else 'person; red mug'
    publisher.publish(String(data=text))
    expected = ['red mug', 'person'] if latched else ['person', 'red mug']
    client.wait_for(lambda: client.active[-1] == '; '.join(expected), f'the echo of {text!r}')
    msg = image_msg(RGB, 'rgb8')
    check_result(client.publish_and_wait(msg), msg, expected)


def test_a_one_shot_publisher_is_heard(gem_node, client):
    """A publisher that sends one query as soon as it sees the node (a script, `ros2 topic pub
    --once`): with the tests' LARGE_DATA transport such a sample came before the node had
    matched the publisher, and the best-effort subscription, the only volatile one then, lost
    36 of 40 (CI: a flaky echo). The reliable subscription gets it once the node matches."""
    import rclpy

    for attempt in range(5):
        context = rclpy.Context()
        rclpy.init(args=[], context=context)
        node = rclpy.create_node('one_shot_queries', context=context)
        try:
            publisher = node.create_publisher(String, 'queries', 10)  # reliable, volatile
            deadline = time.monotonic() + 30
            while publisher.get_subscription_count() == 0:
                assert time.monotonic() < deadline, 'the node was not discovered'
                time.sleep(0.01)
            text = f'one shot {attempt}'
            publisher.publish(String(data=text))  # once, at once; kept alive until heard
            client.wait_for(lambda t=text: client.active[-1] == t, f'the echo of {text!r}')
        finally:  # a participant of its own, as a script has: bounded teardown
            close_ros('one-shot publisher', context, node)
    assert gem_node.log().count('active queries: [one shot 4]') == 1


@pytest.mark.parametrize(
    'value,expected',
    [('a; b, a', 'a; b'), (['x', ' y ', ''], 'x; y')],
    ids=['string', 'string-array'],
)
def test_queries_parameter_replaces_queries_at_run_time(client, value, expected):
    assert client.set_parameters(queries=value).successful
    client.wait_for(lambda: client.active[-1] == expected, f'the echo of {expected!r}')
    msg = image_msg(RGB, 'rgb8')
    check_result(client.publish_and_wait(msg), msg, expected.split('; '))


def bad_images():
    truncated = image_msg(RGB, 'rgb8')
    truncated.data = truncated.data[:-10]
    zero = Image(header=header(), height=0, width=0, encoding='rgb8', step=0)
    unknown = image_msg(RGB[..., 0], 'bayer_rggb8')
    corrupt = CompressedImage(
        header=header(), format='jpeg', data=array.array('B', b'\xff\xd8 not really a jpeg')
    )
    return [
        (truncated, 'truncated image data: 2294 bytes, expected height*step = 24*96 = 2304'),
        (zero, 'zero-size image (0x0)'),
        (unknown, "unsupported image encoding 'bayer_rggb8'"),
        (corrupt, "cannot decode compressed image (format 'jpeg'"),
    ]


@pytest.mark.parametrize(
    'bad,error', bad_images(), ids=['truncated', 'zero-size', 'unknown-encoding', 'corrupt-jpeg']
)
def test_bad_image_is_logged_and_the_next_frame_served(gem_node, client, bad, error):
    set_queries(client, 'red')
    mark = len(gem_node.log())
    publisher = client.compressed_pub if isinstance(bad, CompressedImage) else client.image_pub
    publisher.publish(bad)
    log = gem_node.wait_for_log(error, after=mark, timeout=30)
    assert '[ERROR]' in log.split(error)[0].splitlines()[-1]
    msg = image_msg(RGB, 'rgb8')
    check_result(client.publish_and_wait(msg), msg, ['red'])


@pytest.mark.parametrize(
    'text,error',
    [
        ('', "no queries in ''"),
        (' , ;; ', "no queries in ' , ;; '"),
        ('x' * 10_000, 'query of 10000 characters is too long'),
        ('杯子' * 100, 'tokens; the text encoder takes at most 77'),
    ],
    ids=['empty', 'separators-only', '10000-characters', 'too-many-tokens'],
)
def test_bad_query_on_topic_is_logged_and_the_old_queries_kept(gem_node, client, text, error):
    set_queries(client, 'red', 'blue')
    mark = len(gem_node.log())
    client.queries_pub.publish(String(data=text))
    log = gem_node.wait_for_log(error, after=mark)
    assert 'keeping the active queries [red; blue]' in log
    msg = image_msg(RGB, 'rgb8')
    check_result(client.publish_and_wait(msg), msg, ['red', 'blue'])
    assert client.active[-1] == 'red; blue'


def test_too_long_query_on_service_is_refused(gem_node, client):
    set_queries(client, 'red')
    response = client.call(
        client.set_queries_client, SetQueries.Request(queries=['fine', 'y' * 10_000])
    )
    assert not response.success
    assert 'too long' in response.message and 'keeping the active queries [red]' in response.message
    msg = image_msg(RGB, 'rgb8')
    check_result(client.publish_and_wait(msg), msg, ['red'])


def test_non_ascii_queries_are_served_intact(gem_node, client):
    # CLIP's byte-level BPE takes any UTF-8 text; the strings must survive the round trip.
    client.queries_pub.publish(String(data='café; 杯子'))
    client.wait_for(lambda: client.active[-1] == 'café; 杯子', 'the echo of café; 杯子')
    assert 'active queries: [café; 杯子]' in gem_node.log()
    msg = image_msg(RGB, 'rgb8')
    check_result(client.publish_and_wait(msg), msg, ['café', '杯子'])


def mask_area(result) -> int:
    return sum(r.area for r in result.results)


def test_mask_threshold_applies_to_the_next_frame(client):
    set_queries(client, 'red', 'blue')
    areas = {}
    try:
        for threshold in (0.9, 0.1):
            assert client.set_parameters(mask_threshold=threshold).successful
            msg = image_msg(random_rgb(48, 64, seed=11), 'rgb8')
            areas[threshold] = mask_area(client.publish_and_wait(msg))
    finally:
        client.set_parameters(mask_threshold=0.5)
    assert 0 < areas[0.9] < areas[0.1]


@pytest.mark.parametrize(
    'name,value,reason',
    [
        # rclpy's own reasons, from the parameters' descriptors (range, read-only)
        ('mask_threshold', 1.5, 'Parameter mask_threshold out of range Min: 0.0, Max: 1.0'),
        ('method', 'sam', 'method must be one of gem, clip, naclip, sclip, clearclip'),
        ('device', 'gpu0', 'device must be auto, cpu, cuda or cuda:N'),
        ('prompt_template', 'a photo', "needs exactly one '{}'"),
        ('image_qos', 'reliable', 'Trying to set a read-only parameter: image_qos.'),
        ('queries', ['ok', 'z' * 400], 'bad queries: query of 400 characters is too long'),
    ],
)
def test_invalid_parameter_values_are_refused(client, name, value, reason):
    result = client.set_parameters(**{name: value})
    assert not result.successful
    assert reason and reason in result.reason, result.reason


@pytest.mark.parametrize(
    'values,reason',
    [
        (dict(pretrained='test/fixtures/no-such-weights.pt'), 'checkpoint file not found'),
        (dict(model='ViT-B-17'), "unknown open_clip model 'ViT-B-17'"),
        (dict(pretrained='no-such-tag'), "no pretrained tag 'no-such-tag'"),
        (dict(device='cuda:7'), 'CUDA is not available'),
        (dict(input_size=1024), 'more than max_input_pixels 401408'),
    ],
    ids=['missing-file', 'unknown-model', 'unknown-tag', 'no-cuda', 'input-over-budget'],
)
def test_model_settings_that_cannot_work_are_refused_when_set(client, values, reason):
    before = client.get_parameters(*values)
    result = client.set_parameters(**values)
    assert not result.successful
    assert reason in result.reason
    assert client.get_parameters(*values) == before


def test_failed_load_keeps_the_old_model_and_puts_the_parameter_back(gem_node, client):
    set_queries(client, 'red')
    mark = len(gem_node.log())
    # An existing file that is no checkpoint passes the check when set; loading fails.
    assert client.set_parameters(pretrained=TINY_WEIGHTS['model']).successful
    log = gem_node.wait_for_log('parameters set back to it', after=mark)
    assert 'could not load' in log
    client.wait_for(
        lambda: client.get_parameters('pretrained')['pretrained'] == TINY_WEIGHTS['pretrained'],
        'pretrained set back to the model in use',
    )
    msg = image_msg(RGB, 'rgb8')
    check_result(client.publish_and_wait(msg), msg, ['red'])
    # The next model change loads, instead of reusing the bad value.
    mark = len(gem_node.log())
    try:
        assert client.set_parameters(method='clip').successful
        log = gem_node.wait_for_log('method clip, device cpu, precision fp32) on cpu', after=mark)
        assert 'could not load' not in log
    finally:
        assert client.set_parameters(method='gem').successful
        gem_node.wait_for_log('method gem, device cpu, precision fp32) on cpu', after=mark)


def test_model_reload_swaps_in_the_new_model_while_serving(gem_node, client):
    set_queries(client, 'red')
    mark = len(gem_node.log())
    assert client.set_parameters(pretrained=TINY_WEIGHTS['pretrained'], method='clip').successful
    gem_node.wait_for_log('method clip, device cpu, precision fp32) on cpu', after=mark)
    msg = image_msg(RGB, 'rgb8')
    check_result(client.publish_and_wait(msg), msg, ['red'])
    mark = len(gem_node.log())
    assert client.set_parameters(method='gem').successful
    gem_node.wait_for_log('method gem, device cpu, precision fp32) on cpu', after=mark)


def test_queries_are_served_while_a_model_loads(gem_node, client):
    """The wiring: a query change during a model load is answered at once, and the node
    serves the new queries. Which model answers a frame during a load, and that the old one
    does, is the engine's (test_engine.py, with a load held until a frame was served: a
    ViT-B-16 load here takes 1 s, too short to aim a frame at)."""
    set_queries(client, 'red')
    mark = len(gem_node.log())
    try:
        assert client.set_parameters(model='ViT-B-16', pretrained='none').successful
        gem_node.wait_for_log("loading model 'ViT-B-16'", after=mark)
        set_queries(client, 'green')  # asserts the answer and the echo
    finally:
        assert client.set_parameters(**TINY_WEIGHTS).successful
        # Superseded before it finished, or finished and then replaced: the tiny model.
        back = (
            "not using the model 'ViT-B-16'",
            'gem-tiny-test.pt, method gem, device cpu, precision fp32) on cpu',
        )
        deadline = time.monotonic() + 110
        while not any(line in gem_node.log()[mark:] for line in back):
            assert time.monotonic() < deadline, gem_node.log()[mark:][-3000:]
            time.sleep(0.05)
    msg = image_msg(RGB, 'rgb8')
    check_result(client.publish_and_wait(msg), msg, ['green'])


def test_burst_of_frames_builds_no_backlog(client):
    set_queries(client, 'red', 'blue')
    # At most 2 frames/s: a queue of 100 frames would take 50 s to drain; the newest-frame
    # slot answers the last frames right after the burst.
    assert client.set_parameters(max_rate_hz=2.0).successful
    try:
        pixels = random_rgb(480, 640, seed=5)
        burst = [image_msg(pixels, 'rgb8', frame_id='burst') for _ in range(100)]
        for msg in burst:
            client.image_pub.publish(msg)
        recent = {(m.header.stamp.sec, m.header.stamp.nanosec) for m in burst[-5:]}

        def burst_results():
            return [r for r in client.results if r.header.frame_id == 'burst']

        client.wait_for(
            lambda: any(
                (r.header.stamp.sec, r.header.stamp.nanosec) in recent for r in burst_results()
            ),
            'a result for one of the last 5 frames of the burst',
            timeout=30,
        )
    finally:
        client.set_parameters(max_rate_hz=0.0)
    stamps = [r.header.stamp.sec for r in burst_results()]
    assert stamps == sorted(set(stamps))  # in order, each frame at most once
    assert len(stamps) < 100


def test_every_method_serves_frames_from_its_parameter(gem_node, client):
    set_queries(client, 'red')
    msg = image_msg(RGB, 'rgb8')
    scores = {}
    try:
        for method in ('naclip', 'sclip', 'clearclip'):
            mark = len(gem_node.log())
            assert client.set_parameters(method=method, naclip_std=3.0).successful
            gem_node.wait_for_log(
                f'method {method}, device cpu, precision fp32) on cpu', after=mark
            )
            msg.header = header()
            result = client.publish_and_wait(msg)
            check_result(result, msg, ['red'])
            scores[method] = result.results[0].score
    finally:
        mark = len(gem_node.log())
        assert client.set_parameters(method='gem', naclip_std=5.0).successful
        gem_node.wait_for_log('method gem, device cpu, precision fp32) on cpu', after=mark)
    assert len(set(scores.values())) == 3, scores  # three different functions


@pytest.mark.timeout(300)  # the switch exports in a child process (below)
def test_the_onnxruntime_backend_serves_the_same_results(gem_node, client):
    from gem_ros.gem.backends import ONNXRUNTIME_MISSING, onnxruntime_available

    if not onnxruntime_available():
        pytest.skip(ONNXRUNTIME_MISSING)
    set_queries(client, 'red', 'blue')
    msg = image_msg(RGB, 'rgb8')
    by_torch = client.publish_and_wait(msg)
    mark = len(gem_node.log())
    try:
        assert client.set_parameters(backend='onnxruntime').successful
        # The graphs export in a child process, one thread at lower priority (issue 38): on
        # a loaded 2-core machine that takes longer than the old in-process export.
        gem_node.wait_for_log(
            'precision fp32, backend onnxruntime) on cpu', after=mark, timeout=180.0
        )
        msg.header = header()
        by_onnx = client.publish_and_wait(msg)
        check_result(by_onnx, msg, ['red', 'blue'])
        for a, b in zip(by_torch.results, by_onnx.results):
            # Logits agree to 1e-6; the upsampled peak may sit on a plateau's other pixel.
            assert abs(a.peak_x - b.peak_x) <= 1 and abs(a.peak_y - b.peak_y) <= 1
            assert a.found == b.found and a.score == pytest.approx(b.score, abs=1e-4)
    finally:
        mark = len(gem_node.log())
        assert client.set_parameters(backend='torch').successful
        gem_node.wait_for_log('method gem, device cpu, precision fp32) on cpu', after=mark)


def test_an_unavailable_backend_is_refused_and_the_model_kept(gem_node, client):
    from gem_ros.gem.backends import tensorrt_available

    if tensorrt_available():
        pytest.skip('TensorRT is installed here: the refusal would be of the device')
    set_queries(client, 'red')
    result = client.set_parameters(backend='tensorrt')
    assert not result.successful and "backend 'tensorrt' needs TensorRT" in result.reason, result
    msg = image_msg(RGB, 'rgb8')
    check_result(client.publish_and_wait(msg), msg, ['red'])  # still serving, with torch


def test_node_stops_cleanly_on_sigint(gem_node, client):
    assert gem_node.stop() == 0


def test_bad_startup_parameter_exits_with_a_clear_message(tmp_path):
    node = NodeProcess(tmp_path / 'node.log', *TINY_MODEL, 'method:=sam')
    try:
        assert node.proc.wait(60) == 2
        assert (
            'cannot start' in node.log()
            and 'method must be one of gem, clip, naclip, sclip, clearclip' in node.log()
        )
    finally:
        node.stop()
