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
state; ~/locate answers at once that the node is inactive. With `autostart` (default true) the
node configures and activates itself once spinning, for systems without a lifecycle manager.
"""

from rclpy.lifecycle import LifecycleNodeMixin, LifecycleState, TransitionCallbackReturn

from gem_ros.ros.node import GemNode

SUCCESS, FAILURE = TransitionCallbackReturn.SUCCESS, TransitionCallbackReturn.FAILURE


class ManagedGemNode(LifecycleNodeMixin, GemNode):
    def __init__(self):
        GemNode.__init__(self, managed=True)  # parameters, queries, services; no model yet
        LifecycleNodeMixin.__init__(self)
        self._autostart_timer = None
        if self.get_parameter('autostart').value:
            self._autostart_timer = self.create_timer(0.0, self._autostart)
        else:
            self.get_logger().info(
                'unconfigured: waiting for a lifecycle manager (autostart false)'
            )

    def lifecycle_state(self) -> str:
        return self._state_machine.current_state[1]

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
        self.get_logger().info(f"active: processing {self.resolve_topic_name('image')}")
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
    from gem_ros.ros.node import main as node_main

    return node_main(args, node_class=ManagedGemNode)


if __name__ == '__main__':
    raise SystemExit(main())
