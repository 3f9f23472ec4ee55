"""Scripted planners for the paper's task suite, one module per task, on a shared public API (:mod:`.common`).

Each task module has ``plan(motion, states) -> (actions, phases)``: ``motion`` is the control period's
:class:`~robot_rl.teachers.plans.common.Motion` (period commands planned for ``D`` env steps), ``states`` the
``(N, S) float64`` privileged state (:data:`robot_rl.envs.PRIVILEGED_STATE_LAYOUT`), ``actions`` ``(N, 7)``
period deltas in the env's ``pd_ee_delta_pose`` convention and ``phases`` ``N`` phase names. Planners are
stateless: the phase is inferred from the state alone, so the teacher can be queried sparsely, in any order.
:data:`robot_rl.teachers.scripted.PLANNERS` maps task families to them.
"""
