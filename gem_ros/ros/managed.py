"""gem_node as a managed (lifecycle) node: the same GemNode, started idle, whose transitions
load and release the model and take and stop frames (ROS 2 node lifecycle design).

- configure: load the model and the active queries' text embeddings (waits for the load, so
  the transition answers with its outcome; a failure leaves the node unconfigured and says
  why);
- activate: subscribe the camera (and depth) topics: frames are processed and published;
- deactivate: unsubscribe them; the model stays loaded;
- cleanup: release the model and give its memory back (host RAM and CUDA memory);
- shutdown (from any state) and error processing: stop frames, release the model.

Queries (topic, ~/set_queries, the parameter), parameters and /diagnostics work in every
state, during transitions too: the transitions (and autostart) have a callback group and an
executor thread of their own, so a configure that waits minutes for a TensorRT build, or a
cleanup that waits for the frame in flight, holds no other callback. ~/locate answers at once
that the node is inactive. With `autostart` (default true) the
node configures and activates itself once spinning, for systems without a lifecycle manager.
"""

from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.lifecycle import LifecycleNodeMixin, LifecycleState, TransitionCallbackReturn

from gem_ros.ros.node import GemNode
from gem_ros.ros.process import run_node
from gem_ros.threads import ThrottledLog

SUCCESS, FAILURE = TransitionCallbackReturn.SUCCESS, TransitionCallbackReturn.FAILURE
REFUSED_LOG_PERIOD_S = 5.0  # refused transitions: a confused manager may send many


def describe_transitions(available) -> str:
    """'configure (1), shutdown (5)' from rclpy's available_transitions tuples."""
    return ', '.join(f'{t[1]} ({t[0]})' for t in available) or 'none'


class ManagedGemNode(LifecycleNodeMixin, GemNode):
    # One executor thread for the transitions (one at a time: their own mutually exclusive
    # group), one for every other callback (the node's default group, as in the plain node).
    EXECUTOR_THREADS = 2

    def __init__(self):
        GemNode.__init__(self, managed=True)  # parameters, queries, services; no model yet
        self._transitions = MutuallyExclusiveCallbackGroup()
        LifecycleNodeMixin.__init__(self, callback_group=self._transitions)
        # rclpy resolves a label against the current state's transitions and refuses an
        # unknown one, but passes an id straight to rcl, which raises RCLError inside the
        # service callback for one that does not exist from this state: the request got no
        # answer and the error ended the node's spin. Lifecycle managers (nav2's) send ids.
        self._rclpy_change_state = self._service_change_state.callback
        self._service_change_state.callback = self._on_change_state
        self._refused = ThrottledLog(self.get_logger(), REFUSED_LOG_PERIOD_S)
        self._autostart_timer = None
        if self.get_parameter('autostart').value:
            self._autostart_timer = self.create_timer(
                0.0, self._autostart, callback_group=self._transitions
            )
        else:
            self.get_logger().info(
                'unconfigured: waiting for a lifecycle manager (autostart false)'
            )

    def lifecycle_state(self) -> str:
        return self._state_machine.current_state[1]

    def _on_change_state(self, request, response):
        """~/change_state: every request is answered. One whose transition does not exist
        from the current state (by label if it has one, as rclpy resolves it, else by id)
        gets success false and a throttled log line; the others go to rclpy unchanged."""
        wanted = request.transition
        available = self._state_machine.available_transitions
        if wanted.label:
            known = any(t[1] == wanted.label for t in available)
            asked = f'transition {wanted.label!r}'
        else:
            known = any(t[0] == wanted.id for t in available)
            asked = f'transition id {wanted.id}'
        if not known:
            self._refused(  # one line per refusal and state per period: a loop cannot flood
                'warning',
                f'change_state {asked} {self.lifecycle_state()}',
                f'change_state refused: no {asked} from state {self.lifecycle_state()!r} '
                f'(available: {describe_transitions(available)})',
            )
            response.success = False
            return response
        try:
            return self._rclpy_change_state(request, response)
        except Exception as exc:  # noqa: BLE001 - answer, and keep the node serving
            self._refused('error', 'change_state_failed', f'change_state {asked} failed: {exc}')
            response.success = False
            return response

    def _autostart(self) -> None:
        self.destroy_timer(self._autostart_timer)
        self.get_logger().info('autostart: configure, then activate')
        if self.trigger_configure() == SUCCESS:
            self.trigger_activate()

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._want_model()
        error = self._engine.wait_for_model(
            self._model_settings(), cancelled=lambda: not self.context.ok()
        )
        if error:
            self._model_wanted = False
            self._engine.unload()
            self.get_logger().error(f'configure failed, staying unconfigured: {error}')
            return FAILURE
        self.get_logger().info('configured: model loaded; activate to process frames')
        return SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._start_frames()
        topics = ', '.join(c.image_topic for c in self._cameras.values())
        self.get_logger().info(f'active: processing {topics}')
        return SUCCESS

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_frames()
        self.get_logger().info('inactive: frames not processed; the model stays loaded')
        return SUCCESS

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._drop_model()
        self.get_logger().info('unconfigured: model released')
        return SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_frames()
        self._drop_model()
        self.get_logger().info('finalized: model released; stop the process to end it')
        return SUCCESS

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_frames()
        self._drop_model()
        self.get_logger().error(f'error in {state.label}: model released, now unconfigured')
        return SUCCESS


def main(args=None) -> int:
    return run_node(ManagedGemNode, args)


if __name__ == '__main__':
    raise SystemExit(main())
