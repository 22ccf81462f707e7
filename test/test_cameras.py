"""One gem_node serving three cameras (issue 27), driven over Fast DDS from this process:
each camera's results, detections and overlay on its own topics with its frame's header; a
frame on one camera gives what the model gives for it alone, whatever another camera sends
meanwhile; ~/locate through one camera or the best of all; /diagnostics per camera; bad
camera names refused at start-up; and the node's peak memory with three cameras."""

import threading
import time

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray
from sensor_msgs.msg import Image
from std_msgs.msg import String

import gem_ros.gem as gem
from gem_ros.msg import GemResult
from gem_ros.ros.qos import LATCHED_QOS
from gem_ros.srv import Locate, SetQueries

from hostile_inputs import read_kib
from ros_helpers import TINY_MODEL, NodeProcess, RosClient, header, image_msg
from tiny_model import CONFIG, WEIGHTS

pytestmark = pytest.mark.timeout(300)
CAMERAS = ('front', 'left', 'right')
INPUT_SIZE = 96


def _picture(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 60, (96, 128, 3), dtype=np.uint8)
    image[20 + seed : 60, 30 : 80 + seed] = (220, 30, 30)  # a red block, so peaks are not ties
    return image


class Cameras:
    """Publishers of each camera's images, and the node's per-camera outputs kept."""

    def __init__(self, client: RosClient):
        self.client, node = client, client.node
        self.images = {c: node.create_publisher(Image, f'{c}/image', 10) for c in CAMERAS}
        self.results = {c: [] for c in CAMERAS}
        self.overlays = {c: [] for c in CAMERAS}
        for c in CAMERAS:
            node.create_subscription(
                GemResult, f'/gem/{c}/results', client._keep(self.results[c]), 50
            )
            node.create_subscription(Image, f'/gem/{c}/overlay', client._keep(self.overlays[c]), 5)
        self.active = {c: [] for c in CAMERAS}
        for c in CAMERAS:
            node.create_subscription(
                String, f'/gem/{c}/active_queries', client._keep(self.active[c], lambda m: m.data),
                LATCHED_QOS,
            )  # fmt: skip
        self.query_topics = {c: node.create_publisher(String, f'{c}/queries', 10) for c in CAMERAS}
        self.arrays = []
        node.create_subscription(DiagnosticArray, '/diagnostics', client._keep(self.arrays), 50)
        self.locate_client = node.create_client(Locate, '/gem/locate')

    def wait_matched(self, timeout=30.0):
        deadline = time.monotonic() + timeout
        while not (
            all(p.get_subscription_count() for p in self.images.values())
            and self.client.set_queries_client.service_is_ready()
            and self.locate_client.service_is_ready()
        ):
            assert time.monotonic() < deadline, 'the cameras were not discovered'
            time.sleep(0.05)

    def send(self, camera: str, picture: np.ndarray, timeout=30.0, resend_s=5.0):
        """Publish a frame on `camera` and return its result (resent after resend_s: images
        travel best effort)."""
        msg = image_msg(picture, 'rgb8', frame_id=f'{camera}_optical')
        deadline = time.monotonic() + timeout
        while True:
            msg.header = header(f'{camera}_optical')
            self.images[camera].publish(msg)
            try:
                return self.client.wait_for(
                    lambda: next((r for r in self.results[camera] if r.header == msg.header), None),
                    f'the result of a frame on {camera}',
                    min(resend_s, max(deadline - time.monotonic(), 0.1)),
                )
            except AssertionError:
                if time.monotonic() >= deadline:
                    raise


@pytest.fixture(scope='module')
def client():
    ros = RosClient()
    yield ros
    ros.close()


@pytest.fixture(scope='module')
def cameras(client):
    return Cameras(client)


@pytest.fixture(scope='module')
def node(client, cameras, tmp_path_factory):
    process = NodeProcess(
        tmp_path_factory.mktemp('cameras') / 'node.log',
        *TINY_MODEL,
        f'cameras:=[{", ".join(CAMERAS)}]',
        'queries:=[red, blue]',
        f'input_size:={INPUT_SIZE}',
        'overlay_max_rate_hz:=0.0',
        'hold:=false',  # each frame's results are its own, to compare with the model's
    )
    try:
        process.wait_for_log('loaded model')
        cameras.wait_matched()
        yield process
    finally:
        process.stop()


def test_each_camera_gets_its_own_results_with_its_frame_id(node, cameras):
    assert '3 cameras: /front/image, /left/image, /right/image' in node.log()
    for i, camera in enumerate(CAMERAS):
        result = cameras.send(camera, _picture(i))
        assert result.header.frame_id == f'{camera}_optical'
        assert [r.query for r in result.results] == ['red', 'blue']
        # Nothing of it on the other cameras' topics.
        for other in set(CAMERAS) - {camera}:
            assert not [r for r in cameras.results[other] if r.header == result.header]
    # The overlay too, with the camera's header.
    overlay = cameras.client.wait_for(
        lambda: next((o for o in cameras.overlays['right'] if o.header == result.header), None),
        'the overlay of the frame on right',
    )
    assert overlay.header.frame_id == 'right_optical'


def test_a_frame_gives_what_the_model_gives_for_it_alone_while_another_camera_streams(
    node, cameras
):
    """The model in this process, with the node's settings, is the single-camera answer."""
    model = gem.load_model(CONFIG, WEIGHTS, device='cpu')
    stop = threading.Event()

    def stream():  # front sends as fast as it can meanwhile
        msg = image_msg(_picture(7), 'rgb8', frame_id='front_optical')
        while not stop.is_set():
            msg.header = header('front_optical')
            cameras.images['front'].publish(msg)
            time.sleep(0.005)

    thread = threading.Thread(target=stream, daemon=True)
    thread.start()
    try:
        for seed in (3, 4):
            picture = _picture(seed)
            result = cameras.send('left', picture)
            alone = model.locate(
                picture, ['red', 'blue'], input_size=INPUT_SIZE, presence_rule='off'
            )
            for got, want in zip(result.results, alone):
                assert abs(got.score - want.score) < 1e-5, (got.score, want.score)
                assert abs(got.confidence - want.confidence) < 1e-5
                assert (got.peak_x, got.peak_y, got.found) == (want.peak_x, want.peak_y, want.found)
    finally:
        stop.set()
        thread.join(5)
    assert cameras.results['front'], 'the streaming camera was served too'


def test_the_frames_of_one_cycle_are_each_published_under_their_own_header(node, cameras, client):
    """All three cameras send at once, again and again, with cycles spaced by max_rate_hz
    (the tiny model is quicker than the frames come) and a question for any camera waiting
    (which keeps a cycle one batch on a CPU too, engine._forwards): each cycle holds a frame
    of every camera, and each result is published on its own camera's topic under its own
    frame's header."""
    assert client.set_parameters(max_rate_hz=4.0).successful
    try:
        _each_under_its_own_header(cameras)
    finally:
        assert client.set_parameters(max_rate_hz=0.0).successful


def _each_under_its_own_header(cameras):
    sent = {c: set() for c in CAMERAS}
    pictures = {c: image_msg(_picture(i), 'rgb8', frame_id=f'{c}_optical') for i, c in
                enumerate(CAMERAS)}  # fmt: skip

    def served() -> dict:
        """Per camera, its results of this test's frames; fails on a result under another
        frame's header (results of earlier tests' frames, stamps not sent here, are left)."""
        mine = {}
        for c in CAMERAS:
            mine[c] = []
            for r in list(cameras.results[c]):
                stamp = (r.header.stamp.sec, r.header.stamp.nanosec)
                theirs = [o for o in CAMERAS if o != c and stamp in sent[o]]
                assert r.header.frame_id == f'{c}_optical' and not theirs, (
                    f'a result on {c} under the header of a frame sent on {theirs}: {r.header}'
                )
                if stamp in sent[c]:
                    mine[c].append(r)
            stamps = [(r.header.stamp.sec, r.header.stamp.nanosec) for r in mine[c]]
            assert len(stamps) == len(set(stamps)), f'a frame on {c} published more than once'
        return mine

    deadline = time.monotonic() + 60
    question = None
    while not all(len(results) >= 4 for results in served().values()):
        counts = {c: len(r) for c, r in served().items()}
        assert time.monotonic() < deadline, f'results per camera in 60 s: {counts}'
        if question is None or question.done():
            request = Locate.Request(query='blue', timeout=10.0, camera='')
            question = cameras.locate_client.call_async(request)
        for c, msg in pictures.items():
            msg.header = header(f'{c}_optical')
            sent[c].add((msg.header.stamp.sec, msg.header.stamp.nanosec))
            cameras.images[c].publish(msg)
        time.sleep(0.05)
    served()


def test_locate_through_one_camera_or_the_best_view(node, cameras, client):
    def locate(camera: str):
        done = threading.Event()
        future = cameras.locate_client.call_async(
            Locate.Request(query='red', timeout=20.0, camera=camera)
        )
        future.add_done_callback(lambda _: done.set())
        deadline = time.monotonic() + 30
        # A question is answered by the next frame of its camera: keep the cameras sending.
        pictures = {c: image_msg(_picture(i), 'rgb8', frame_id=f'{c}_optical') for i, c in
                    enumerate(CAMERAS)}  # fmt: skip
        while not done.wait(0.2):
            assert time.monotonic() < deadline, 'no answer from ~/locate'
            for c, msg in pictures.items():
                msg.header = header(f'{c}_optical')
                cameras.images[c].publish(msg)
        return future.result()

    answer = locate('left')
    assert answer.camera == 'left' and answer.header.frame_id == 'left_optical', answer
    best = locate('')
    assert best.camera in CAMERAS and best.header.frame_id == f'{best.camera}_optical'
    refused = client.call(
        cameras.locate_client, Locate.Request(query='red', timeout=1.0, camera='rear')
    )
    assert not refused.found and "no camera 'rear'" in refused.message, refused.message


def test_diagnostics_has_a_status_per_camera(node, cameras):
    cameras.send('front', _picture(1))
    array = cameras.client.wait_for(
        lambda: next((a for a in reversed(cameras.arrays) if len(a.status) == 4), None),
        'a /diagnostics array with the node and its three cameras',
    )
    names = [s.name for s in array.status]
    assert names == ['gem: inference'] + [f'gem: camera {c}' for c in CAMERAS], names
    values = {kv.key: kv.value for kv in array.status[1].values}
    assert values['camera'] == 'front' and values['image topic'] == '/front/image'
    assert 'dropped frames' in values and 'processed rate (Hz)' in values


def test_three_cameras_keep_the_nodes_peak_memory_bounded(node, cameras):
    """All three cameras at once, 640x480 frames; peak RSS of the node process (one model,
    one torch runtime) under the bound a single camera's node is held to."""
    big = {c: image_msg(np.full((480, 640, 3), 40 * i, np.uint8), 'rgb8', frame_id=f'{c}_optical')
           for i, c in enumerate(CAMERAS)}  # fmt: skip
    for _ in range(5):
        for c, msg in big.items():
            msg.header = header(f'{c}_optical')
            cameras.images[c].publish(msg)
        time.sleep(0.1)
    cameras.send('right', _picture(2))
    peak_mib = read_kib(node.proc.pid, 'VmHWM') / 1024
    assert peak_mib < 1500, f'node peak RSS {peak_mib:.0f} MiB with 3 cameras'


@pytest.mark.parametrize(
    'value,reason',
    [
        ('[front, front]', "cameras: 'front' is named twice"),
        ('[front, 2nd]', "cameras: '2nd' is not a camera name"),
    ],
)
def test_bad_camera_names_stop_the_start_with_the_reason(tmp_path, value, reason):
    process = NodeProcess(tmp_path / 'node.log', *TINY_MODEL, f'cameras:={value}')
    code = process.proc.wait(60)
    assert code != 0 and reason in process.log(), process.log()[-2000:]


def test_set_queries_reaches_every_camera(node, cameras, client):
    answer = client.call(client.set_queries_client, SetQueries.Request(queries=['green']))
    assert answer.success
    try:
        for i, camera in enumerate(CAMERAS):
            assert [r.query for r in cameras.send(camera, _picture(i)).results] == ['green']
    finally:
        client.call(client.set_queries_client, SetQueries.Request(queries=['red', 'blue']))


def test_a_camera_with_queries_of_its_own_runs_them_and_the_others_the_shared_ones(
    node, cameras, client
):
    """`left` gets its own queries through ~/set_queries, `right` through its queries
    topic: each camera runs its own, `front` the shared ones, with the model's own answer
    for each frame; each camera's active_queries says what it runs; `use_shared` gives the
    shared ones back; an unknown camera and use_shared without one are refused."""
    set_queries = client.set_queries_client
    answer = client.call(set_queries, SetQueries.Request(queries=['green'], camera='left'))
    assert answer.success and 'on camera left (its own)' in answer.message, answer.message
    cameras.query_topics['right'].publish(String(data='car; blue'))
    try:
        client.wait_for(lambda: cameras.active['right'][-1:] == ['car; blue'], 'right active')
        assert cameras.active['left'][-1] == 'green' and cameras.active['front'][-1] == 'red; blue'
        model = gem.load_model(str(CONFIG), str(WEIGHTS), device='cpu')
        for i, (camera, queries) in enumerate(
            (('front', ['red', 'blue']), ('left', ['green']), ('right', ['car', 'blue']))
        ):
            picture = _picture(i)
            got = cameras.send(camera, picture).results
            assert [r.query for r in got] == queries, camera
            alone = model.locate(picture, queries, input_size=INPUT_SIZE)
            for r, a in zip(got, alone):
                assert abs(r.score - a.score) < 1e-5, (camera, r.query, r.score, a.score)

        def left_queries():  # of the newest /diagnostics array
            for status in cameras.arrays[-1].status if cameras.arrays else ():
                if status.name.endswith('camera left'):
                    return {v.key: v.value for v in status.values}['queries']

        client.wait_for(lambda: left_queries() == 'green (its own)', 'left in /diagnostics')
        refused = client.call(set_queries, SetQueries.Request(queries=['x'], camera='rear'))
        assert not refused.success and "no camera 'rear'" in refused.message, refused.message
        refused = client.call(set_queries, SetQueries.Request(use_shared=True))
        assert not refused.success and 'use_shared needs a camera' in refused.message
    finally:
        for camera in ('left', 'right'):
            back = client.call(set_queries, SetQueries.Request(camera=camera, use_shared=True))
            assert back.success, back.message
    client.wait_for(lambda: cameras.active['left'][-1:] == ['red; blue'], 'left shared again')
    assert [r.query for r in cameras.send('left', _picture(1)).results] == ['red', 'blue']
