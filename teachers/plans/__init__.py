"""Scripted planners for the paper's task suite beyond PushCube and PickCube, one module per task.

Each module has ``plan(teacher, states) -> (actions, phases)``: ``teacher`` is the calling
:class:`robot_rl.teachers.scripted.ScriptedTeacher` (its ``_position_command`` / ``_rotation_command``
helpers and ``control_period_steps``), ``states`` the ``(N, 38) float64`` privileged state
(:data:`robot_rl.envs.PRIVILEGED_STATE_LAYOUT`), ``actions`` ``(N, 7)`` period deltas in the env's
``pd_ee_delta_pose`` convention and ``phases`` ``N`` phase names. Planners are stateless: the phase is
inferred from the state alone, so the teacher can be queried sparsely, in any order.
:data:`robot_rl.teachers.scripted.PLANNERS` maps task families to them.
"""
