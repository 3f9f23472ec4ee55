"""Deployment to a Franka-class arm: ONNX export, ROS 2 node, safety filter (built in a later issue)."""
