"""The engine behind the node, driven in-process without ROS: frames, queries, loads, the
rate limit and stopping, with the tiny test model."""

import threading
import time

import numpy as np
import pytest

import gem_ros.gem as gem
from gem_ros.engine import Engine, RunSettings
from gem_ros.settings import FrameSettings, ModelSettings
from gem_ros.stages import by_settings
from gem_ros.threads import ThrottledLog

from tiny_model import CONFIG, WEIGHTS, two_colour_image

TINY = ModelSettings(model=CONFIG, pretrained=WEIGHTS, device="cpu")

pytestmark = pytest.mark.timeout(120)


class Lines:
    def __init__(self):
        self.lines = []

    def info(self, text):
        self.lines.append(("info", text))

    def warning(self, text):
        self.lines.append(("warning", text))

    def error(self, text):
        self.lines.append(("error", text))

    def text(self):
        return "\n".join(text for _, text in self.lines)


class Rig:
    def __init__(self, load=gem.load_model):
        self.logger = Lines()
        self.published, self.failed, self.settings_used = [], [], []
        self.measured, self.geometries = [], []  # what measure was called with; what it gave
        self.cond = threading.Condition()
        self.engine = Engine(
            ThrottledLog(self.logger, 0.0),
            self.convert,
            self.publish,
            on_load_failed=self.failed.append,
            load=load,
            measure=self.measure,
        )

    during_conversion = None  # called inside the conversion of each frame, if set
    convert_fault = publish_fault = None  # called with each frame there, if set: may raise

    def convert(self, frame, max_pixels):
        if self.during_conversion is not None:
            self.during_conversion()
        if self.convert_fault is not None:
            self.convert_fault(frame)
        if isinstance(frame, str):
            raise ValueError(f"unreadable frame {frame}")
        return frame

    def measure(self, result):
        """A frame's geometry: an object of its own, so that readers can be told apart."""
        geometry = object()
        self.measured.append(result.frame)
        self.geometries.append(geometry)
        return geometry

    def publish(self, result):
        assert result.geometry is self.geometries[-1], "published before it was measured"
        if self.publish_fault is not None:
            self.publish_fault(result.frame)
        with self.cond:
            self.published.append((result.frame, result.published))
            self.settings_used.append(result.settings)
            self.cond.notify_all()

    def wait(self, predicate, what, timeout=30.0):
        deadline = time.monotonic() + timeout
        while not predicate():
            assert time.monotonic() < deadline, f"{what}:\n{self.logger.text()}"
            time.sleep(0.02)

    def loaded(self, settings=TINY):
        self.engine.request_model(settings)
        self.wait(lambda: self.engine.loaded == settings, "the model to load")
        return self


@pytest.fixture
def rig():
    r = Rig()
    yield r
    assert r.engine.close()


def test_frames_wait_for_queries_and_a_model(rig):
    assert rig.engine.offer(two_colour_image()) == "no active queries"
    rig.engine.set_queries(["red"])
    assert rig.engine.offer(two_colour_image()) == "no model loaded yet"
    rig.loaded()
    assert rig.engine.offer(two_colour_image()) is None
    rig.wait(lambda: rig.published, "a result")
    frame, detections = rig.published[0]
    assert [d.query for d in detections] == ["red"]


def test_queries_are_checked_with_the_models_tokenizer_once_loaded(rig):
    long = "a b c " * 40  # few characters, too many tokens
    assert rig.engine.set_queries([long])  # no model: characters only
    rig.engine.set_queries(["red"])
    rig.loaded()
    with pytest.raises(gem.QueryError, match="tokens"):
        rig.engine.set_queries([long])
    assert rig.engine.queries == ["red"]
    assert not rig.engine.set_queries(["red"])  # unchanged


def test_a_bad_frame_is_logged_and_the_next_served(rig):
    rig.engine.set_queries(["red"])
    rig.loaded()
    rig.engine.offer("garbage")
    rig.wait(lambda: "unreadable frame" in rig.logger.text(), "the error")
    rig.engine.offer(two_colour_image())
    rig.wait(lambda: rig.published, "the next frame's result")


def test_a_failed_load_keeps_the_model_and_says_which_settings_failed(rig):
    rig.engine.set_queries(["red"])
    rig.loaded()
    bad = ModelSettings(model=CONFIG, pretrained=CONFIG, device="cpu")  # no checkpoint
    rig.engine.request_model(bad)
    rig.wait(lambda: rig.failed == [bad], "the failure callback")
    assert rig.engine.loaded == TINY
    assert rig.engine.forget_request(bad) and not rig.engine.forget_request(bad)
    rig.engine.offer(two_colour_image())
    rig.wait(lambda: rig.published, "a result from the old model")


def test_a_load_superseded_while_it_runs_is_not_used():
    started, release = threading.Event(), threading.Event()

    def slow_load(settings):
        if settings.method == "clip":
            started.set()
            release.wait(30)
        return gem.load_model(settings)

    rig = Rig(load=slow_load).loaded()
    try:
        clip = ModelSettings(model=CONFIG, pretrained=WEIGHTS, device="cpu", method="clip")
        rig.engine.request_model(clip)
        assert started.wait(30)
        rig.engine.request_model(TINY)  # back to the model in use while clip loads
        release.set()
        rig.wait(lambda: "not using" in rig.logger.text(), "the superseded load")
        assert rig.engine.loaded == TINY
    finally:
        release.set()
        assert rig.engine.close()


def test_frames_are_offered_while_a_new_model_checks_the_queries():
    """Issue 38: a new model's last check of the active queries (its tokenizer, which may be
    slow for many long queries) must not hold the lock offer() takes: a camera callback
    never waits on it."""
    checking, release = threading.Event(), threading.Event()

    def load_gated(settings):
        model = gem.load_model(settings)
        if settings.method == "clip":
            check = model.check_queries
            calls = []

            def gated(queries):
                calls.append(queries)
                if len(calls) == 2:  # the check before it goes into use
                    checking.set()
                    release.wait(30)
                return check(queries)

            model.check_queries = gated
        return model

    rig = Rig(load=load_gated)
    try:
        rig.engine.set_queries(["red"])
        rig.loaded()
        rig.engine.request_model(
            ModelSettings(model=CONFIG, pretrained=WEIGHTS, device="cpu", method="clip")
        )
        assert checking.wait(30), rig.logger.text()
        offered = []
        caller = threading.Thread(target=lambda: offered.append(rig.engine.offer(
            two_colour_image(), "cam")))  # fmt: skip
        caller.start()
        caller.join(5.0)
        release.set()
        assert offered == [None], "offer() waited for the new model's tokenizer"
        rig.wait(lambda: rig.engine.loaded.method == "clip", "the new model in use")
    finally:
        release.set()
        assert rig.engine.close()


def test_rate_limit_follows_a_settings_change_at_once(rig):
    rig.engine.set_queries(["red"])
    rig.loaded()
    rig.engine.update_settings(RunSettings(max_rate_hz=0.001))
    rig.engine.offer(two_colour_image())
    rig.wait(lambda: len(rig.published) == 1, "the first frame")
    rig.engine.offer(two_colour_image(64, 64))
    time.sleep(0.7)
    assert len(rig.published) == 1  # held back: the next frame may start in 1000 s
    rig.engine.update_settings(RunSettings(max_rate_hz=0.0))
    rig.wait(lambda: len(rig.published) == 2, "the held frame", timeout=2.0)


def test_frame_settings_are_used_as_one_snapshot(rig):
    """Settings changed while a frame is being converted apply from the next frame: the frame
    in flight is finished with the settings it started with, all of them."""
    rig.engine.set_queries(["red"])
    rig.loaded()
    strict = RunSettings(frame=FrameSettings(mask_threshold=0.9, presence="off"))
    loose = RunSettings(frame=FrameSettings(mask_threshold=0.1, presence="off"))
    areas = {}
    for name, settings in (("strict", strict), ("loose", loose)):
        rig.engine.update_settings(settings)
        rig.engine.offer(two_colour_image())
        rig.wait(lambda n=len(areas): len(rig.published) == n + 1, "a result")
        areas[name] = rig.published[-1][1][0].area
    assert areas["strict"] < areas["loose"], areas  # the two thresholds tell apart
    rig.engine.update_settings(strict)
    rig.during_conversion = lambda: rig.engine.update_settings(loose)  # mid-frame
    rig.engine.offer(two_colour_image())
    rig.wait(lambda: len(rig.published) == 3, "the frame changed mid-way")
    rig.during_conversion = None
    assert rig.settings_used[-1] is strict
    assert rig.published[-1][1][0].area == areas["strict"]
    rig.engine.offer(two_colour_image())  # the next frame has the new settings
    rig.wait(lambda: len(rig.published) == 4, "the next frame")
    assert rig.settings_used[-1] is loose and rig.published[-1][1][0].area == areas["loose"]


def test_a_snapshot_rebuilt_with_the_same_values_does_not_split_a_cycle():
    """Issue 38: a query change rebuilds the settings snapshot with the same values; frames
    converted on either side of it are one forward, frames of another value another."""
    first, same = RunSettings(max_rate_hz=2.0), RunSettings(max_rate_hz=2.0)
    other = RunSettings(max_rate_hz=3.0)
    assert first is not same
    items = [("a", ("fa", "ra", first)), ("b", ("fb", "rb", same)), ("c", ("fc", "rc", other))]
    groups = by_settings(items)
    assert [(s, [camera for camera, _, _ in g]) for s, g in groups] == [
        (first, ["a", "b"]),
        (other, ["c"]),
    ]
    assert groups[0][0] is first and groups[0][1][1] == ("b", "fb", "rb")


def test_aspect_ratio_over_the_budget_is_refused_and_logged(rig):
    rig.engine.set_queries(["red"])
    rig.loaded()
    rig.engine.offer(np.zeros((1, 10_000, 3), np.uint8))
    rig.wait(lambda: "cannot be fed within max_input_pixels" in rig.logger.text(), "the error")
    assert not rig.published


def test_close_while_a_model_loads_does_not_wait_for_it():
    release = threading.Event()

    def stuck_load(settings):
        release.wait(60)
        return gem.load_model(settings)

    rig = Rig(load=stuck_load)
    rig.engine.request_model(TINY)
    rig.wait(lambda: "loading model" in rig.logger.text(), "the load to start")
    assert not rig.engine.close()  # returned while the loader is still in its load
    assert not release.is_set() and "loaded model" not in rig.logger.text()
    release.set()


def test_a_question_is_answered_by_the_next_frame_without_changing_the_active_results(rig):
    rig.engine.set_queries(["red"])
    rig.loaded()
    image = two_colour_image(64, 64)
    rig.engine.offer(image)
    rig.wait(lambda: len(rig.published) == 1, "a result")
    _, plain = rig.published[-1]
    answers = []
    rig.engine.ask("blue", lambda result, i: answers.append(result.detections[i]))
    rig.engine.ask("red", lambda result, i: answers.append(result.detections[i]))
    rig.engine.offer(image)
    rig.wait(lambda: len(rig.published) == 2 and len(answers) == 2, "the answers")
    _, with_question = rig.published[-1]
    assert [d.query for d in answers] == ["blue", "red"]
    assert [d.query for d in with_question] == ["red"]  # only the active ones published
    assert with_question[0].confidence == pytest.approx(plain[0].confidence, abs=1e-6)
    np.testing.assert_array_equal(with_question[0].mask, plain[0].mask)


def test_each_frame_is_measured_once_and_its_publish_and_answers_read_that(rig):
    """Issue 38: a frame's geometry (depth, points, TF) is measured once, before anything
    reads it; its publish and every question it answers (active query or not) get that one
    measurement (the node's ~/locate measured depth a second time, and looked TF up again)."""
    rig.engine.set_queries(["red"])
    rig.loaded()
    seen = []
    for query in ("blue", "red"):
        rig.engine.ask(query, lambda result, i: seen.append((result.frame, result.geometry)))
    image = two_colour_image(64, 64)
    rig.engine.offer(image)
    rig.wait(lambda: len(rig.published) == 1 and len(seen) == 2, "the result and answers")
    assert rig.measured == [image]
    assert [frame is image and g is rig.geometries[0] for frame, g in seen] == [True, True]


def test_questions_wait_without_active_queries_and_can_be_withdrawn(rig):
    rig.loaded()
    answers = []
    kept = rig.engine.ask("red", lambda result, i: answers.append(result.detections[i].query))
    dropped = rig.engine.ask("blue", lambda result, i: answers.append(result.detections[i].query))
    assert rig.engine.withdraw(dropped) and not rig.engine.withdraw(dropped)
    assert rig.engine.offer(two_colour_image(64, 64)) is None  # a question makes a frame run
    rig.wait(lambda: answers, "the answer")
    assert answers == ["red"] and not rig.engine.withdraw(kept)
    with pytest.raises(gem.QueryError):
        rig.engine.ask("  ", lambda *a: None)


def test_while_a_new_model_loads_the_old_one_serves_frames_and_new_queries():
    """A model swap never leaves the camera unanswered: a frame offered, and queries changed,
    while the new model is still loading are answered by the old model; once the new one is
    in, frames get its answers, which differ (method clip instead of gem)."""
    release = threading.Event()

    def load(settings):
        if settings.method == "clip":
            release.wait(60)  # held until the test has served a frame meanwhile
        return gem.load_model(settings)

    rig = Rig(load=load)
    try:
        rig.engine.set_queries(["red"])
        rig.loaded()
        image = two_colour_image()
        rig.engine.offer(image)
        rig.wait(lambda: len(rig.published) == 1, "a frame on the first model")
        old_score = rig.published[-1][1][0].score
        clip = ModelSettings(model=CONFIG, pretrained=WEIGHTS, device="cpu", method="clip")
        rig.engine.request_model(clip)
        rig.wait(lambda: "loading model" in rig.logger.text().split("loaded model")[-1], "load")
        rig.engine.set_queries(["blue"])
        rig.engine.offer(image)
        rig.wait(lambda: len(rig.published) == 2, "a frame during the load")
        during = rig.published[-1][1][0]
        assert during.query == "blue" and rig.engine.loaded == TINY  # the old model answered
        assert not release.is_set()
        release.set()
        rig.wait(lambda: rig.engine.loaded == clip, "the new model")
        rig.engine.set_queries(["red"])
        rig.engine.offer(image)
        rig.wait(lambda: len(rig.published) == 3, "a frame on the new model")
        new_score = rig.published[-1][1][0].score
        assert abs(new_score - old_score) > 1e-3, (old_score, new_score)
    finally:
        release.set()
        assert rig.engine.close()


# --- several cameras, one model ---------------------------------------------------


def test_each_cameras_newest_frame_is_served_and_none_starves(rig):
    """A camera offering as fast as it can never starves one offering once: each cycle takes
    the newest frame of every camera that has one waiting (a batch), so the single frame of
    the slow camera is served, and frames are dropped per camera only."""
    rig.engine.set_queries(["red"])
    rig.loaded()
    fast = np.zeros((48, 64, 3), np.uint8)
    slow = np.full((48, 64, 3), 200, np.uint8)
    stop = threading.Event()

    def camera():
        while not stop.is_set():
            rig.engine.offer(fast.copy(), "fast")
            time.sleep(0.001)

    thread = threading.Thread(target=camera, daemon=True)
    thread.start()
    try:
        rig.wait(lambda: len(rig.published) >= 3, "the fast camera served")
        rig.engine.offer(slow, "slow")
        rig.wait(lambda: any(f is slow for f, _ in rig.published), "the slow frame served")
    finally:
        stop.set()
        thread.join(5)
    assert rig.engine.dropped_of("slow") == 0
    assert rig.engine.dropped_of("fast") > 0
    assert rig.engine.dropped == rig.engine.dropped_of("fast")


def test_a_question_for_one_camera_is_answered_by_that_cameras_frame(rig):
    """Frames of two cameras in one cycle (held back by max_rate_hz until both wait): the
    question for `right` is answered by right's frame even where left's is the better view;
    a question for any camera gets the better one."""
    off = FrameSettings(presence="off")  # every query found: the score picks the best view
    rig.engine.update_settings(RunSettings(frame=off))
    rig.engine.set_queries(["red"])
    rig.loaded()
    model = rig.engine.model
    a = two_colour_image()
    b = np.ascontiguousarray(a[:, ::-1])
    scores = {id(x): model.locate(x, ["blue"], presence_rule="off")[0].score for x in (a, b)}
    better, worse = sorted((a, b), key=lambda x: -scores[id(x)])
    assert scores[id(better)] > scores[id(worse)]
    # The first frame goes at once; the rate then holds the next cycle until it is lifted.
    rig.engine.update_settings(RunSettings(frame=off, max_rate_hz=0.001))
    rig.engine.offer(np.zeros((48, 64, 3), np.uint8), "left")
    rig.wait(lambda: len(rig.published) == 1, "the first frame")
    answers = {}
    rig.engine.ask("blue", lambda result, i: answers.setdefault("right", result.frame), "right")
    rig.engine.ask("blue", lambda result, i: answers.setdefault("any", result.frame))
    rig.engine.offer(better, "left")
    rig.engine.offer(worse, "right")
    rig.engine.update_settings(RunSettings(frame=off))  # both taken in one cycle
    rig.wait(lambda: len(answers) == 2, "both answers")
    assert answers["right"] is worse and answers["any"] is better


def test_a_question_for_any_camera_gets_the_view_of_highest_confidence(rig):
    """Presence on, every query found (presence_threshold 0) but with the confidence of its
    own frame: the question for any camera is answered by the frame of higher confidence."""
    found = FrameSettings(presence_threshold=0.0)
    rig.engine.update_settings(RunSettings(frame=found))
    rig.engine.set_queries(["red"])
    rig.loaded()
    model = rig.engine.model
    a = two_colour_image()
    b = np.ascontiguousarray(a[::-1, ::-1] // 2)
    args = found.locate_arguments()
    confidence = {id(x): model.locate(x, ["blue"], **args)[0].confidence for x in (a, b)}
    assert confidence[id(a)] != confidence[id(b)], confidence
    better = max((a, b), key=lambda x: confidence[id(x)])
    rig.engine.update_settings(RunSettings(frame=found, max_rate_hz=0.001))
    rig.engine.offer(np.zeros((48, 64, 3), np.uint8), "left")
    rig.wait(lambda: len(rig.published) == 1, "the first frame")
    answers = []
    rig.engine.ask("blue", lambda result, i: answers.append((result.frame, result.detections[i])))
    rig.engine.offer(a, "left")
    rig.engine.offer(b, "right")
    rig.engine.update_settings(RunSettings(frame=found))  # both taken in one cycle
    rig.wait(lambda: answers, "the answer")
    frame, det = answers[0]
    assert det.found and frame is better, (confidence, det.confidence)


def test_a_cameras_slot_keeps_its_newest_frame_and_counts_the_one_replaced(rig):
    """While a cycle is held (another camera's frame waits in its conversion), frames A then
    B arrive on one camera: B is served, A never is, and one drop is counted for it."""
    rig.engine.set_queries(["red"])
    rig.loaded()
    held, release = threading.Event(), threading.Event()

    def hold():
        if not held.is_set():
            held.set()
            assert release.wait(30)

    rig.during_conversion = hold
    other = np.zeros((48, 64, 3), np.uint8)
    a, b = two_colour_image(), two_colour_image(64, 64)
    assert rig.engine.offer(other, "other") is None
    assert held.wait(30)
    assert rig.engine.offer(a, "cam") is None
    assert rig.engine.offer(b, "cam") is None
    release.set()
    rig.wait(lambda: any(f is b for f, _ in rig.published), "B served")
    rig.wait(lambda: any(f is other for f, _ in rig.published), "the held frame served")
    time.sleep(0.3)  # nothing else is coming
    assert len(rig.published) == 2 and not any(f is a for f, _ in rig.published)
    assert rig.engine.dropped_of("cam") == 1 and rig.engine.dropped_of("other") == 0
    assert rig.engine.dropped == 1


def test_a_camera_with_queries_of_its_own_runs_them_in_the_same_cycle(rig):
    """Two cameras' frames in one cycle (held back by max_rate_hz until both wait): `wrist`
    runs its own queries, `head` the shared ones, each as locate alone gives them; once
    wrist drops its own, it runs the shared ones again. A question for any camera reaches
    both frames whatever their queries."""
    rig.engine.set_queries(["red"])
    assert rig.engine.set_queries(["blue", "green"], "wrist")
    assert rig.engine.queries == ["red"] and rig.engine.queries_of("head") == ["red"]
    assert rig.engine.queries_of("wrist") == ["blue", "green"]
    rig.loaded()
    model = rig.engine.model
    head, wrist = two_colour_image(), np.ascontiguousarray(two_colour_image()[:, ::-1])
    rig.engine.update_settings(RunSettings(max_rate_hz=0.001))
    rig.engine.offer(np.zeros((48, 64, 3), np.uint8), "head")
    rig.wait(lambda: len(rig.published) == 1, "the first frame")
    answers = []
    rig.engine.ask(
        "person", lambda result, i: answers.append((result.frame, result.detections[i].query))
    )
    rig.engine.offer(head, "head")
    rig.engine.offer(wrist, "wrist")
    rig.engine.update_settings(RunSettings())  # both taken in one cycle
    rig.wait(lambda: len(rig.published) == 3 and answers, "both frames and the answer")
    got = {id(frame): dets for frame, dets in rig.published[1:]}
    for frame, queries in ((head, ["red"]), (wrist, ["blue", "green"])):
        assert [d.query for d in got[id(frame)]] == queries  # the question's is not published
        for a, b in zip(model.locate(frame, queries), got[id(frame)]):
            assert abs(a.score - b.score) < 1e-5 and np.array_equal(a.mask, b.mask)
    assert answers[0][1] == "person" and any(answers[0][0] is f for f in (head, wrist))
    assert rig.engine.set_queries(None, "wrist")  # back to the shared ones
    assert not rig.engine.set_queries(None, "wrist")  # already
    rig.engine.offer(wrist, "wrist")
    rig.wait(lambda: len(rig.published) == 4, "wrist's frame with the shared queries")
    assert [d.query for d in rig.published[3][1]] == ["red"]
    rig.engine.set_queries([], "wrist")  # its own, empty: nothing to run
    assert rig.engine.offer(wrist, "wrist") == "no active queries"
    assert rig.engine.offer(head, "head") is None


# --- faults in one frame's path cost that frame only (issue 38) -----------------------------


def test_a_publish_that_raises_costs_its_frame_only_and_the_questions_are_answered(rig):
    """One camera's publish raises (not a ROS error): the other camera of the same cycle is
    published and the cycle's question answered, at once, not at its timeout."""
    rig.engine.set_queries(["red"])
    rig.loaded()
    broken = np.zeros((48, 64, 3), np.uint8)

    def publish_fault(frame):
        if frame is broken:
            raise KeyError("a publisher gone")

    rig.publish_fault = publish_fault
    rig.engine.update_settings(RunSettings(max_rate_hz=0.001))
    rig.engine.offer(two_colour_image(), "warm")
    rig.wait(lambda: len(rig.published) == 1, "the first frame")
    answers = []
    rig.engine.ask("blue", lambda result, i: answers.append(result.frame))
    good = two_colour_image(64, 64)
    rig.engine.offer(broken, "a")
    rig.engine.offer(good, "b")
    rig.engine.update_settings(RunSettings())  # both in one cycle
    rig.wait(lambda: answers and any(f is good for f, _ in rig.published), "b and the answer")
    assert "KeyError" in rig.logger.text() and "a publisher gone" in rig.logger.text()
    rig.wait(lambda: rig.engine.in_flight is None, "nothing left in flight")


def test_a_conversion_error_of_any_kind_costs_its_frame_only(rig):
    """A conversion raising TypeError (not ValueError) for one camera: the other camera of
    the cycle is converted and published, and nothing stays in flight."""
    rig.engine.set_queries(["red"])
    rig.loaded()

    def convert_fault(frame):
        if isinstance(frame, bytes):
            raise TypeError("bytes are no image")

    rig.convert_fault = convert_fault
    rig.engine.update_settings(RunSettings(max_rate_hz=0.001))
    rig.engine.offer(two_colour_image(), "warm")
    rig.wait(lambda: len(rig.published) == 1, "the first frame")
    good = two_colour_image(64, 64)
    rig.engine.offer(b"garbage", "a")
    rig.engine.offer(good, "b")
    rig.engine.update_settings(RunSettings())
    rig.wait(lambda: any(f is good for f, _ in rig.published), "b's frame")
    assert "bytes are no image" in rig.logger.text()
    rig.wait(lambda: rig.engine.in_flight is None, "nothing left in flight")


def test_an_inference_error_leaves_nothing_in_flight_and_the_next_frame_is_served(rig):
    """A frame the model cannot take (2-D, no channels) fails inside inference: logged, not
    left in flight, and the next frame is served."""
    rig.engine.set_queries(["red"])
    rig.loaded()
    rig.engine.offer(np.zeros((48, 64), np.uint8), "cam")
    rig.wait(lambda: "frame failed" in rig.logger.text(), "the error")
    rig.wait(lambda: rig.engine.in_flight is None, "nothing left in flight", timeout=5)
    rig.engine.offer(two_colour_image(), "cam")
    rig.wait(lambda: rig.published, "the next frame")
