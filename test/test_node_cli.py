"""What a user types: `gem_node --help`, `gem-ros --version`, the start-up warning about Fast
DDS's transports, and `gem-ros queries` / `gem-ros where` against a running node."""

import json
import subprocess
import sys

import pytest

from ros_helpers import REPO, TINY_MODEL, NodeProcess, RosClient, image_msg, random_rgb, source_env

pytestmark = pytest.mark.timeout(120)


def _run(*args, timeout=60):
    return subprocess.run(
        [sys.executable, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=source_env(),
        cwd=REPO,
    )


def test_gem_node_help_prints_usage_and_starts_nothing():
    # A node it started would never exit: any bound shows that. 60 s, not 20: importing torch
    # and rclpy took over 20 s on 2 cores shared by six test workers.
    out = _run('-m', 'gem_ros.ros.node', '--help', timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith('usage: gem_node')
    assert "mask_format (default 'full')" in out.stdout and 'presence_threshold' in out.stdout
    assert '[gem]' not in out.stdout + out.stderr  # no node logged anything


def test_gem_ros_version():
    out = _run('-m', 'gem_ros.cli', '--version')
    assert out.returncode == 0 and out.stdout.startswith('gem-ros ')


def test_default_fast_dds_transports_are_warned_about(tmp_path, monkeypatch):
    monkeypatch.delenv('FASTDDS_BUILTIN_TRANSPORTS')
    node = NodeProcess(tmp_path / 'node.log', *TINY_MODEL)
    try:
        node.wait_for_log('FASTDDS_BUILTIN_TRANSPORTS is not set')
    finally:
        node.stop()


def test_queries_and_where_talk_to_a_running_node(tmp_path):
    node = NodeProcess(tmp_path / 'node.log', *TINY_MODEL, 'queries:=[red]')
    try:
        node.wait_for_log('loaded model')
        out = _run('-m', 'gem_ros.cli', 'queries', 'cup; chair')
        assert out.returncode == 0, out.stderr
        assert 'active queries: [cup; chair]' in out.stdout
        node.wait_for_log('active queries: [cup; chair] (from ~/set_queries)')
        out = _run('-m', 'gem_ros.cli', 'queries', 'cup', '--camera', 'wrist')
        assert out.returncode == 1 and "no camera 'wrist': this node has one camera" in out.stdout
        out = _run('-m', 'gem_ros.cli', 'where', 'red mug', '--timeout', '0.5')
        assert out.returncode == 0, out.stderr
        answer = json.loads(out.stdout)
        assert answer['query'] == 'red mug' and answer['found'] is False
        assert 'no frame processed within 0.5 s' in answer['message']
    finally:
        node.stop()
    out = _run('-m', 'gem_ros.cli', 'queries', 'cup', '--wait', '0.5')
    assert out.returncode == 1 and 'is gem_node running?' in out.stderr


def test_without_vision_msgs_the_node_says_so_and_runs(tmp_path, monkeypatch):
    hidden = tmp_path / 'hide' / 'vision_msgs'
    hidden.mkdir(parents=True)
    (hidden / '__init__.py').write_text('raise ImportError("hidden by the test")\n')
    monkeypatch.setenv('PYTHONPATH', str(tmp_path / 'hide'))
    node = NodeProcess(tmp_path / 'node.log', *TINY_MODEL, 'queries:=[red]', 'input_size:=96')
    client = RosClient()
    try:
        node.wait_for_log('vision_msgs is not installed: ~/detections')
        node.wait_for_log('loaded model')
        client.wait_matched()
        result = client.publish_and_wait(image_msg(random_rgb(48, 64), 'rgb8'))
        assert [r.query for r in result.results] == ['red']
        assert not client.node.count_publishers('/gem/detections')  # and no detections
    finally:
        client.close()
        node.stop()


@pytest.mark.parametrize(
    'image_qos,expected', [('sensor_data', 'BEST_EFFORT'), ('reliable', 'RELIABLE')]
)
def test_image_qos_at_start_up_is_the_image_subscriptions_reliability(
    tmp_path, image_qos, expected
):
    """docs/node.md: image_qos (read-only) picks the camera subscription's QoS at start-up."""
    import time

    node = NodeProcess(tmp_path / 'node.log', *TINY_MODEL, f'image_qos:={image_qos}')
    client = RosClient()
    try:
        node.wait_for_log('loaded model')
        deadline = time.monotonic() + 30
        while True:
            infos = [
                i
                for i in client.node.get_subscriptions_info_by_topic('/image')
                if i.node_name == 'gem'
            ]
            if infos or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert len(infos) == 1, infos
        assert infos[0].qos_profile.reliability.name == expected
    finally:
        client.close()
        node.stop()
