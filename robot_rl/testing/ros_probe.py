"""A test's own rclpy node on the test's DDS domain (``tests/deploy/test_ros2_*.py``): its own context, node and
single-threaded executor, spun while the test waits. Each test subclasses it with the topics it records.

Imports rclpy (the ROS 2 wheels, ``[test]`` extra): import it only where ROS 2 is used.
"""

from __future__ import annotations

import time
from typing import Any, Callable

import rclpy
from rclpy.executors import SingleThreadedExecutor

__all__ = ["RosProbe"]


class RosProbe:
    """An rclpy node of its own context on DDS domain ``domain``, named ``name``.

    Args:
        domain: the ROS domain id (the test's, so parallel runs do not hear each other).
        name: the node name.
        spin_step_s: the executor's timeout per spin in :meth:`spin_for` (s).
    """

    def __init__(self, domain: int, name: str, spin_step_s: float = 0.02):
        self.ctx = rclpy.Context()
        rclpy.init(context=self.ctx, domain_id=domain)
        self.node = rclpy.create_node(name, context=self.ctx)
        self.executor = SingleThreadedExecutor(context=self.ctx)
        self.executor.add_node(self.node)
        self.spin_step_s = float(spin_step_s)

    def spin_for(self, seconds: float) -> None:
        """Spin the node for ``seconds`` (s) of wall time."""
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.executor.spin_once(timeout_sec=self.spin_step_s)

    def wait_for(self, predicate: Callable[[], Any], timeout_s: float, what: str) -> Any:
        """Spin until ``predicate()`` is truthy and return its value.

        Raises:
            AssertionError: not within ``timeout_s`` (s); the message names ``what`` (and
                :meth:`timeout_detail`, if any).
        """
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            self.executor.spin_once(timeout_sec=0.02)
            value = predicate()
            if value:
                return value
        detail = self.timeout_detail()
        raise AssertionError(f"timed out after {timeout_s} s waiting for {what}{'; ' + detail if detail else ''}")

    def call(self, srv_type, name: str, request, timeout_s: float = 10.0):
        """Call service ``name`` (type ``srv_type``) and return its response.

        Raises:
            AssertionError: the service is not up, or does not answer, within ``timeout_s`` (s) each.
        """
        client = self.node.create_client(srv_type, name)
        self.wait_for(lambda: client.service_is_ready(), timeout_s, f"service {name}")
        future = client.call_async(request)
        self.wait_for(future.done, timeout_s, f"answer of {name}")
        return future.result()

    def lifecycle_state(self, node: str) -> int:
        """The ``lifecycle_msgs/State`` id of lifecycle node ``node`` (``~/get_state``)."""
        from lifecycle_msgs.srv import GetState

        return self.call(GetState, f"/{node}/get_state", GetState.Request()).current_state.id

    def transition(self, node: str, transition_id: int) -> bool:
        """Ask lifecycle node ``node`` for ``lifecycle_msgs/Transition`` ``transition_id``; whether it succeeded."""
        from lifecycle_msgs.msg import Transition
        from lifecycle_msgs.srv import ChangeState

        return self.call(ChangeState, f"/{node}/change_state",
                         ChangeState.Request(transition=Transition(id=transition_id))).success

    def timeout_detail(self) -> str:
        """What a timed-out :meth:`wait_for` adds to its message (a subclass's last status, say); empty here."""
        return ""

    def close(self) -> None:
        """Destroy the node and shut its context down."""
        self.node.destroy_node()
        rclpy.shutdown(context=self.ctx)
