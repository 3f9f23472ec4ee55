"""Test helpers, kept out of the runtime packages a user imports (DESIGN.md, Style).

- :class:`~robot_rl.testing.server.ServerThread`: an ASGI app (a teacher server) on uvicorn in a
  background thread, on a free loopback port.
- :mod:`robot_rl.testing.tiny_vla`: a tiny random-weight OpenVLA-style checkpoint built locally
  (:func:`~robot_rl.testing.tiny_vla.save_tiny_vla`), for the OpenVLA backend's tests and benchmarks.
- :class:`~robot_rl.testing.ros_probe.RosProbe`: a test's own rclpy node on its DDS domain (imports rclpy).
- :class:`~robot_rl.testing.teachers.NotesTeacher`: a tiny backend that writes scratchpad notes and
  records what it was sent.

Used by ``tests/`` and ``benchmarks/``; importing this package imports nothing heavy (each module
imports what it needs: uvicorn, transformers).
"""
