"""What keeps one callback's error from ending the node or leaving a caller unanswered.

rclpy's executor re-raises a callback's exception from `spin_once`, and a service whose
callback raised sends no response: its caller waits for ever. So our service callbacks are
wrapped to answer every request (`answered`), and the spin loop logs a callback's error and
goes on serving (`spin_until_shutdown`); only the shutdown of the context ends it.
"""

import inspect
import traceback

from rclpy.executors import ExternalShutdownException

SHUTDOWN_POLL_S = 0.2  # the executor looks at least this often whether ROS was shut down


def where(exc: BaseException) -> str:
    """'file.py:123 in function' of the innermost frame of exc's traceback."""
    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        return 'unknown place'
    frame = frames[-1]
    return f"{frame.filename.rsplit('/', 1)[-1]}:{frame.lineno} in {frame.name}"


def describe(exc: BaseException) -> str:
    return f'{type(exc).__name__}: {exc} (at {where(exc)})'


def answered(callback, log, service: str):
    """`callback` (sync or async) as a service callback that answers every request: an
    exception is logged (throttled, per service) and answered with success false (where the
    response has it) and the error in its message."""

    def failed(response, exc: Exception):
        log('error', f'service {service}', f'{service} failed, answered as failed: {describe(exc)}')
        if hasattr(response, 'success'):
            response.success = False
        if hasattr(response, 'message'):
            response.message = f'internal error: {type(exc).__name__}: {exc}'[:500]
        return response

    if inspect.iscoroutinefunction(callback):

        async def guarded_async(request, response):
            try:
                return await callback(request, response)
            except Exception as exc:  # noqa: BLE001 - the caller gets an answer
                return failed(response, exc)

        return guarded_async

    def guarded(request, response):
        try:
            return callback(request, response)
        except Exception as exc:  # noqa: BLE001 - the caller gets an answer
            return failed(response, exc)

    return guarded


def spin_until_shutdown(executor, log) -> None:
    """Run callbacks until the context is shut down.

    - rclpy's signal thread triggers the executor's guard condition *before* it shuts the
      context down, and the shutdown itself wakes nobody: an executor that wakes in between
      sees the context still up and sleeps until the next timer (30 s, the stats timer; seen
      in CI). Waking every SHUTDOWN_POLL_S bounds that.
    - A shutdown that lands between the loop's check and spin_once's wait makes the wait fail
      (RCLError: its timeout timer is made on a dead context; seen in CI): the normal end too.
    - Any other error is one callback's (rclpy re-raises it from spin_once): logged with
      where it came from, throttled per kind, and the node goes on serving. One bad request
      must not take a robot's perception down.
    """
    while executor.context.ok():
        try:
            executor.spin_once(timeout_sec=SHUTDOWN_POLL_S)
        except ExternalShutdownException:
            return  # shut down while waiting: the normal end
        except Exception as exc:  # noqa: BLE001 - see above
            if not executor.context.ok():
                return  # the shutdown, seen as an error of the wait
            log(
                'error',
                f'callback {type(exc).__name__} {where(exc)}',
                f'a callback failed; the node goes on serving: {describe(exc)}',
            )
