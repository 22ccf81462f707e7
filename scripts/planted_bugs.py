"""Plant each known bug in the source, run the tests meant to catch it, and put the source
back: a test that passes with its bug planted proves nothing (issue 25's rule, "every
changed test was seen to fail against a planted bug").

    python scripts/planted_bugs.py            # every bug; a table at the end
    python scripts/planted_bugs.py depth_min  # the bugs whose name contains 'depth_min'

Run in the test venv, with the environment scripts/test.sh sets up. Exit 1 when a test
passed with its bug planted, or a bug no longer applies (its line is gone from the source:
update the bug here). The source is restored even on ctrl-c."""

import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

# name: (file, the text as it is, the bug, the tests that must fail)
BUGS = {
    'refusal reason reworded (item 5)': (
        'gem_ros/settings.py',
        'return f"device must be auto, cpu, cuda or cuda:N, got {value!r}"',
        'return f"bad device {value!r}"',
        ['test/test_node.py::test_invalid_parameter_values_are_refused'],
    ),
    'Humble fallback: a look-alike class (item 6)': (
        'gem_ros/ros/compat.py',
        '        from rclpy.qos_event import SubscriptionEventCallbacks\n',
        '        class SubscriptionEventCallbacks:  # noqa\n'
        '            def __init__(self, **kwargs):\n'
        '                pass\n',
        ['test/test_compat.py::test_the_event_handler_fallback_imports_the_same_class'],
    ),
    'inactive node subscribes the camera (item 9)': (
        'gem_ros/ros/managed.py',
        "        self.get_logger().info('configured: model loaded; activate to process frames')",
        '        self._start_frames()\n'
        "        self.get_logger().info('configured: model loaded; activate to process frames')",
        ['test/test_lifecycle.py::test_managed_node_states'],
    ),
    'frames fail without vision_msgs (item 11)': (
        'gem_ros/ros/camera.py',
        '        message = messages.gem_result(\n',
        '        messages.detection_array(header, detections, points)  # needs vision_msgs\n'
        '        message = messages.gem_result(\n',
        ['test/test_node_cli.py::test_without_vision_msgs_the_node_says_so_and_runs'],
    ),
    'depth_min ignored': (
        'gem_ros/ros/depth_input.py',
        '            settings.depth_min,\n',
        '            0.1,\n',
        ['test/test_node_depth.py::test_depth_min_rejects_nearer_readings'],
    ),
    'depth_scale ignored': (
        'gem_ros/ros/depth_input.py',
        'depth_msg.encoding, depth_scale or None',
        'depth_msg.encoding, None',
        ['test/test_node_depth.py::test_depth_scale_overrides_the_encodings_unit'],
    ),
    'scclip_lof_contamination ignored': (
        'gem_ros/gem/scclip.py',
        '            settings.scclip_lof_contamination,\n',
        '            0.05,\n',
        ['test/test_scclip.py::test_settings_change_the_result'],
    ),
    'replaced frames not counted': (
        'gem_ros/stages.py',
        '        return self._frames.replaced',
        '        return 0',
        [
            'test/test_diagnostics.py::'
            'test_frames_replaced_while_one_is_in_flight_are_counted_and_logged'
        ],
    ),
    'publish_overlay ignored': (
        'gem_ros/ros/camera.py',
        '        if publish_overlay and self._due(\'overlay\', self.overlay_pub, overlay_rate):',
        '        if self._due(\'overlay\', self.overlay_pub, overlay_rate):',
        ['test/test_node.py::test_publish_overlay_false_gives_no_overlay'],
    ),
    # Issue 26: the graph backends' construction.
    'L2 norms left to fp16': (
        'gem_ros/gem/graph_precision.py',
        '        "ReduceL2",\n',
        '',
        [
            'test/test_graph_backends.py::test_the_fp16_graph_runs_norms_in_fp32_and_products_in_fp16'
        ],
    ),
    'similarity matrices left to fp16': (
        'gem_ros/gem/graph_precision.py',
        '    if node.op_type != "MatMul":\n        return False',
        '    if True:\n        return False',
        [
            'test/test_graph_backends.py::'
            'test_an_outlier_channel_breaks_the_all_fp16_graph_but_not_the_mixed_one'
        ],
    ),
    'graphs built on the first frame, not by the loader': (
        'gem_ros/model_slot.py',
        '        for shape in self._served_shapes():',
        '        for shape in []:',
        [
            'test/test_graph_backends.py::test_frames_are_answered_while_a_switch_to_onnxruntime_exports'
        ],
    ),
    'new sizes built on the worker': (
        'gem_ros/model_slot.py',
        '        backend.build_in_background = self._threads',
        '        backend.build_in_background = False',
        ['test/test_graph_backends.py::test_a_new_input_size_is_served_by_torch_while_it_builds'],
    ),
    'the text template in the graph key': (
        'gem_ros/gem/backends.py',
        '            "input": list(input_hw),',
        '            "input": list(input_hw),\n            "text": settings.prompt_template,',
        [
            'test/test_graph_backends.py::test_graph_keys_hold_what_changes_the_graph_and_nothing_else'
        ],
    ),
    'dynamo passed to every torch': (
        'gem_ros/gem/export.py',
        '    return {"dynamo": False} if "dynamo" in parameters else {}',
        '    return {"dynamo": False}',
        [
            'test/test_graph_backends.py::test_the_exporter_keyword_is_passed_only_where_torch_has_it'
        ],
    ),
    'NACLIP bias copied per frame': (
        'gem_ros/gem/vision.py',
        '            return _cached(self._bias_cache, (*grid, like.device, like.dtype), make)',
        '            return make()',
        ['test/test_graph_backends.py::test_naclip_bias_is_made_once_per_grid_device_and_dtype'],
    ),
    'the cache evicts the newest': (
        'gem_ros/gem/backends.py',
        '    for _, size, path in sorted(files, key=lambda f: f[0]):',
        '    for _, size, path in sorted(files, key=lambda f: -f[0]):',
        ['test/test_graph_backends.py::test_the_cache_evicts_the_least_recently_used_and_says_so'],
    ),
    'TF32 left on in fp32 engines': (
        'gem_ros/gem/backends.py',
        '        config.clear_flag(trt.BuilderFlag.TF32)\n',
        '',
        [
            'test/test_graph_backends.py::test_tensorrt_builds_a_strongly_typed_batch_1_network_without_tf32'
        ],
    ),
    'the engine not ordered after torch': (
        'gem_ros/gem/backends.py',
        '    stream.wait_stream(caller)\n',
        '',
        ['test/test_graph_backends.py::test_the_engine_runs_on_its_own_stream_between_torchs'],
    ),
    'graphs run on the current device, not the model\'s': (
        'gem_ros/gem/backends.py',
        '        if device.type == "cuda":\n            return torch.cuda.device(device)',
        '        if False:\n            return torch.cuda.device(device)',
        ['test/test_graph_backends.py::test_graphs_run_under_the_models_device'],
    ),
    # Issue 27: cameras.
    "every camera's frames published on the first camera's topics": (
        'gem_ros/ros/camera_frames.py',
        '        frame.camera.publish(result)',
        '        next(iter(self.cameras.values())).publish(result)',
        ['test/test_cameras.py::test_each_camera_gets_its_own_results_with_its_frame_id'],
    ),
    'one slot for every camera (the fast camera starves the slow one)': (
        'gem_ros/threads.py',
        '            replaced = self._items.get(key)\n            if key in self._items:',
        "            key = ''\n"
        '            replaced = self._items.get(key)\n            if key in self._items:',
        ['test/test_engine.py::test_each_cameras_newest_frame_is_served_and_none_starves'],
    ),
    'a question answered by any camera': (
        'gem_ros/frame_processor.py',
        '                if request.camera is None or request.camera == result.camera',
        '                if True',
        ['test/test_engine.py::test_a_question_for_one_camera_is_answered_by_that_cameras_frame'],
    ),
    'locate does not name its camera': (
        'gem_ros/ros/locate_service.py',
        '            camera=frame.camera.name,\n',
        '',
        ['test/test_cameras.py::test_locate_through_one_camera_or_the_best_view'],
    ),
    'no status per camera': (
        'gem_ros/ros/health.py',
        '            if len(cameras) > 1\n            else []',
        '            if False\n            else []',
        ['test/test_cameras.py::test_diagnostics_has_a_status_per_camera'],
    ),
    'a batch across input shapes': (
        'gem_ros/gem/locating.py',
        '        groups.setdefault(shape, []).append(i)',
        '        groups.setdefault(0, []).append(i)',
        ['test/test_gem_core.py::test_locate_batch_is_locate_per_image_in_one_forward_per_shape'],
    ),
    # Issue 37: four bugs the suite passed before.
    'locate across cameras picks the lowest confidence': (
        'gem_ros/frame_processor.py',
        'return det.found, det.confidence, det.score',
        'return det.found, -det.confidence, det.score',
        [
            'test/test_engine.py::test_a_question_for_any_camera_gets_the_view_of_highest_confidence',
            'test/test_node_presence.py::'
            'test_locate_across_cameras_answers_from_the_camera_that_sees_the_thing',
        ],
    ),
    'locate across cameras picks the worst view': (
        'gem_ros/frame_processor.py',
        'request.answer(*max(views, key=rank))',
        'request.answer(*min(views, key=rank))',
        [
            'test/test_node_presence.py::'
            'test_locate_across_cameras_answers_from_the_camera_that_sees_the_thing',
        ],
    ),
    'a camera slot keeps its oldest frame': (
        'gem_ros/threads.py',
        '            self._items[key] = item\n            self._cond.notify()\n'
        '            return replaced',
        '            self._items.setdefault(key, item)\n            self._cond.notify()\n'
        '            return replaced',
        [
            'test/test_engine.py::'
            'test_a_cameras_slot_keeps_its_newest_frame_and_counts_the_one_replaced',
        ],
    ),
    'expiry keeps the stale place and drops the fresh': (
        'gem_ros/memory.py',
        '[p for p in places if now - p.last_seen <= self.ttl_s]',
        '[p for p in places if now - p.last_seen > self.ttl_s]',
        [
            'test/test_memory.py::test_places_expire_after_the_ttl',
            'test/test_memory.py::'
            'test_expiry_drops_the_stale_place_and_keeps_the_fresh_one_of_a_query',
        ],
    ),
    'a cycle published under its first frame': (
        'gem_ros/frame_processor.py',
        '                    self._publish(result)',
        '                    result.frame = batch.results[0].frame\n'
        '                    self._publish(result)',
        [
            'test/test_cameras.py::'
            'test_the_frames_of_one_cycle_are_each_published_under_their_own_header',
        ],
    ),
    # Issue 38: the export apart; issue 40: the map of dense features.
    'the live path exports in the serving process': (
        'gem_ros/gem/backends.py',
        '        if self.build_in_background:  # a live path',
        '        if False:  # a live path',
        [
            'test/test_graph_backends.py::'
            'test_frames_are_answered_while_a_switch_to_onnxruntime_exports',
        ],
    ),
    'the map answers whatever was never seen': (
        'gem_ros/feature_map.py',
        '        present = confidence >= threshold\n',
        '        present = confidence >= 0.0\n',
        [
            'test/test_feature_map.py::'
            'test_colours_never_asked_are_found_where_they_were_and_absent_ones_are_not',
        ],
    ),
    'the map never clears what the camera sees through': (
        'gem_ros/feature_map.py',
        "            v['misses'][seen] += 1\n",
        "            v['misses'][seen] += 0\n",
        ['test/test_feature_map.py::test_a_moved_thing_stops_answering_where_it_was'],
    ),
    'the map heats voxels by the cosine, not the margin': (
        'gem_ros/feature_map.py',
        '        margin = cos[0] - rivals if few else (cos[0] - rivals)[rows]\n',
        '        margin = cos[0] if few else cos[0][rows]\n',
        ['test/test_feature_map.py::test_a_stretch_like_every_word_does_not_outrank_the_thing'],
    ),
    'a removed voxel\'s row filled without moving its key': (
        'gem_ros/map_voxels.py',
        '        self.index.update(zip(keys[holes].tolist(), holes.tolist()))\n',
        '',
        [
            'test/test_feature_map.py::'
            'test_removed_voxels_are_filled_from_the_end_with_every_key_on_its_own_row',
        ],
    ),
    "the bag's map ignores the camera's pose": (
        'gem_ros/ros/bag_map.py',
        '            pose = geometry.pose_to(self.tf_frame)\n',
        '            pose = ((0.0, 0.0, 0.0), (0.0, 0.0, 0.0, 1.0))\n',
        [
            'test/test_node_map.py::'
            'test_colours_never_asked_are_found_an_absent_one_is_not_a_moved_one_moves',
            'test/test_node_map.py::test_the_map_file_is_read_back_and_refused_for_another_model',
        ],
    ),
}


def run(name, file, original, bug, tests) -> str:
    path = REPO / file
    source = path.read_text()
    if source.count(original) != 1:
        return f'does not apply: {original.strip()!r} is not once in {file}'
    path.write_text(source.replace(original, bug))
    try:
        started = time.monotonic()
        out = subprocess.run(
            [sys.executable, '-m', 'pytest', '-q', '-x', '-p', 'no:cacheprovider', *tests],
            cwd=REPO,
            capture_output=True,
            text=True,
        )
    finally:
        path.write_text(source)
    took = time.monotonic() - started
    if out.returncode == 0:
        return f'PASSED with the bug planted ({took:.0f} s): the test proves nothing'
    failed = [line for line in out.stdout.splitlines() if line.startswith(('FAILED', 'ERROR'))]
    return f'failed, as it should ({took:.0f} s): {"; ".join(failed)[:300]}'


def main(argv) -> int:
    chosen = {n: b for n, b in BUGS.items() if not argv or any(a in n for a in argv)}
    verdicts = {}
    for name, bug in chosen.items():
        verdicts[name] = run(name, *bug)
        print(f'{name}: {verdicts[name]}', flush=True)
    print('\n| planted bug | tests | verdict |\n|---|---|---|')
    for name, (_, _, _, tests) in chosen.items():
        print(f'| {name} | {", ".join(t.split("::")[-1] for t in tests)} | {verdicts[name]} |')
    return 0 if all(v.startswith('failed') for v in verdicts.values()) else 1


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
