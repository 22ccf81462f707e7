"""Held presence (gem_ros.gem.hold): found/absent decided over frames by hysteresis on the
smoothed confidence, peaks smoothed while found, state per query and reset when the queries
change; and the engine applying it per camera (its questions still decided by one frame)."""

import numpy as np

from gem_ros.gem.hold import HoldRule, PresenceHold, judge_threshold
from gem_ros.gem.postprocess import Detection
from gem_ros.settings import HoldSettings

RULE = HoldRule(threshold=0.5, margin=0.1, window=3, lost_frames=3)


def det(query, confidence, peak=(50, 40)):
    """A detection as the model gives it with held presence: judged at no threshold, so
    found, with its mask (a box around its peak) and peaks."""
    mask = np.zeros((100, 120), bool)
    x, y = peak
    mask[max(y - 10, 0) : y + 10, max(x - 10, 0) : x + 10] = True
    d = Detection(query, 0.3, x, y, (x - 10, y - 10, 20, 20), int(mask.sum()), mask, [(x, y, 0.3)])
    d.confidence = confidence
    return d


def run(confidences, rule=RULE, hold=None):
    hold = hold or PresenceHold()
    out = []
    for c in confidences:
        d = det('mug', c)
        hold.update([d], rule)
        out.append(d.found)
    return out


def test_a_confidence_at_the_threshold_does_not_flicker():
    noisy = [0.45, 0.55] * 10  # one frame decision flips every frame
    assert [c >= 0.5 for c in noisy].count(True) == 10
    assert run(noisy) == [False] * 20


def test_found_and_lost_within_a_few_frames_of_the_change():
    seen = run([0.1] * 5 + [0.9] * 5 + [0.1] * 5)
    assert seen[:5] == [False] * 5
    first = seen.index(True)
    assert 5 <= first <= 7, seen  # at most 2 frames late
    lost = seen.index(False, first)
    assert 10 <= lost <= 12, seen
    assert seen[lost:] == [False] * (15 - lost)


def test_lost_after_lost_frames_under_the_threshold_even_if_the_average_holds():
    # 0.9 then 0.48 for ever: the average stays over the lower threshold (0.4), but every
    # frame is under the threshold itself.
    rule = HoldRule(0.5, 0.1, window=30, lost_frames=3)
    seen = run([0.9] + [0.48] * 5, rule)
    assert seen == [True, True, True, False, False, False]


def test_held_through_a_frame_under_the_threshold_with_its_mask_and_a_peak_on_it():
    hold = PresenceHold()
    for _ in range(3):
        hold.update([det('mug', 0.9, peak=(50, 40))], RULE)
    d = det('mug', 0.3, peak=(52, 44))  # under the threshold: one bad frame
    hold.update([d], RULE)
    assert d.found and d.held and d.area > 0
    assert (d.peak_x, d.peak_y) == (51, 42)  # the average, on this frame's mask
    # Where the average falls off the frame's mask, the frame's own peak is taken instead.
    d = det('mug', 0.9, peak=(62, 44))
    d.mask[:] = False
    d.mask[44, 60:70] = True
    hold.update([d], RULE)
    assert (d.peak_x, d.peak_y) == (62, 44) and d.mask[d.peak_y, d.peak_x]


def test_a_query_held_absent_is_marked_absent():
    hold = PresenceHold()
    hold.update([det('mug', 0.1)], RULE)
    d = det('mug', 0.55)  # over the threshold, but the average is not over the upper one
    hold.update([d], RULE)
    assert not d.found and d.held and d.area == 0 and d.peaks == [] and d.confidence == 0.55


def test_peaks_are_smoothed_while_found_and_restart_on_a_jump():
    hold = PresenceHold()
    d = det('mug', 0.9, peak=(50, 40))
    hold.update([d], RULE)
    assert (d.peak_x, d.peak_y) == (50, 40)
    d = det('mug', 0.9, peak=(54, 40))
    hold.update([d], RULE)
    assert (d.peak_x, d.peak_y) == (52, 40)  # alpha 2 / (3 + 1)
    d = det('mug', 0.9, peak=(110, 90))  # farther than 10 % of the diagonal: another mug
    hold.update([d], RULE)
    assert (d.peak_x, d.peak_y) == (110, 90)


def test_state_is_per_query_and_reset_when_the_queries_change():
    hold = PresenceHold()
    for _ in range(3):
        a, b = det('mug', 0.9), det('cup', 0.1)
        hold.update([a, b], RULE)
    assert a.found and not b.found
    # The same confidence of 0.55 (between the thresholds) keeps mug found, not cup absent.
    a, b = det('mug', 0.55), det('cup', 0.55)
    hold.update([a, b], RULE)
    assert a.found and not b.found
    # New queries: no memory of mug; 0.55 is under the upper threshold, so not found.
    a, c = det('mug', 0.55), det('bowl', 0.55)
    hold.update([a, c], RULE)
    assert not a.found and not c.found


def test_settings_make_the_rule_and_off_is_none():
    assert HoldSettings().rule(0.6) == HoldRule(0.6, 0.1, 3, 3)
    assert HoldSettings(hold=False).rule(0.6) is None
    assert judge_threshold(None, 0.6) == 0.6
    assert judge_threshold(HoldRule(0.6, 0.1), 0.6) == 0.0
