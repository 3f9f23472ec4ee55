"""The latency-aware delayed semantic interface (TIC-VLA): the `teacher` observation group. Empty until that issue."""
