"""``robot-rl deploy ros2``: the policy as an ``rclpy`` lifecycle node for a Franka-class arm.

Lifecycle (``lifecycle_msgs`` services ``~/change_state``, ``~/get_state``, as every ROS 2 managed node):

- **configure**: load the ONNX policy and validate it against its sidecar and the config
  (:class:`~robot_rl.deploy.controller.PolicyController`); create subscriptions and publishers.
  Fails (stays unconfigured, logs why) on a checksum mismatch, an observation layout the inputs
  cannot provide, or a size mismatch.
- **activate**: needs a valid EE pose; arms the safety filter (bounded first command) and starts
  the control timer at the sidecar's rate (or ``rate_hz``).
- **deactivate**: stops commanding and holds: it publishes the current pose as the target once
  (a zero twist for MoveIt Servo).

Control steps: with ``trigger: input`` (default) a step runs as soon as a new EE pose arrives, at
most once per control period (minus :data:`TRIGGER_SLACK_S`), so the command is computed from the
freshest state (franka_ros2 publishes ``current_pose`` at the controller rate). An EE pose that
arrives early is stepped on as soon as its period starts (a one-shot timer), and the step waits
until the other inputs of the same instant are in (every input at least as new as the EE pose)
or ``input_gather_s`` has passed. The timer at the
control rate never re-uses an observation already acted on; when a period passes without input it
only checks the inputs' age, and once they are older than ``max_input_age_s`` it steps so the
safety filter holds (the watchdog). With ``trigger: timer`` the timer at the control rate steps.

With ``trigger: poll`` (``configs/deploy/fr3.yaml``: franka_ros2 publishes ``current_pose`` at 1 kHz) no input has a
callback: the sensor subscriptions live on a helper node the executor never spins (``<node_name>_inputs``), DDS keeps
the newest message of each (KEEP_LAST, depth 1), and at every control tick the node takes the newest message of every
input (:func:`take_latest`), with its DDS reception time, and steps. Its cost no longer grows with the robot's rate:
the whole node takes ~11% of a core at a 1 kHz ``current_pose``, against 87-96% with a callback per message
(``benchmarks/deploy_node_cost.py``; README, "Deploying to a real
Franka"), and the state a step acts on is still < 1 ms old.

Clocks: the watchdog measures every input's age on the node's receive clock (a sender whose clock is offset from
this machine's cannot hold the arm for good), each input against its own limit (``safety.max_input_age_by_input_s``,
else ``max_input_age_s``). A header stamp ahead of the node's clock by more than ``future_stamp_tolerance_s`` is a
clock offset: counted (``future_stamps.<input>``), shown in the status (``clock_offset_s``) and raising the
diagnostics to WARN, because the teacher's ``dp`` and the recordings date observations by header stamps.

Every step goes through the :class:`~robot_rl.deploy.safety.SafetyFilter`; a ``Hold`` publishes
nothing (the arm's controller keeps the last safe target). E-stop: the ``~/estop`` service
(``std_srvs/Trigger``) or ``true`` on the e-stop topic latches the filter and deactivates at once;
``~/reset_estop`` clears the latch (then activate again). Status: a JSON ``std_msgs/String`` per
step: ``t`` (step time, s), ``state``, ``published``, ``hold`` (reason), ``clamped``,
``inference_ms``, ``obs_stamp`` (newest input stamp used, s), ``cmd_stamp`` (header stamp of the
published command, s), ``activations`` (successful activations so far), ``input_age_s`` (each required input's age on
the receive clock, s) and, once a stamp came from the future, ``clock_offset_s`` (input -> s ahead); replay and
``benchmarks/deploy_loop.py`` read it. Diagnostics: ``diagnostic_msgs/DiagnosticArray`` with the safety and input
counters.

Teacher (a policy with a ``teacher`` observation group, :mod:`robot_rl.deploy.teacher`): the node queries the
server at ``teacher.url`` from a worker thread (the control step only submits and polls), sends the camera image
(``topics.image``) and/or the privileged state it assembles when the server's ``/metadata`` says its backend reads
them, and resets the group at activate and at every message on ``topics.episode``. The status carries ``teacher``:
``age_s`` (s since the observation of the hint shown, null without one this episode), ``valid``, ``in_flight``,
``last_delay_s``, ``episode`` and the counters ``queries``, ``answers``, ``failures``, ``invalid``,
``dropped_reset``, ``unknown``, ``resets``; every answer is published on ``topics.teacher_answers`` as a JSON line
(recorded with ``--record``; the replay feeds them back at the steps that handled them). A failing server is logged
once when it starts failing and once when it answers again.

Scratchpad (a policy with a ``memory`` group, :mod:`robot_rl.deploy.teacher`): the node keeps one scratchpad for the
episode, writes each delivered answer's note into it (the note is in the answer's JSON line, ``note``, with the
step that handled it, ``step_s`` / ``step_index``: ``--record`` keeps them and the replay writes them at the same
steps), sends its text with every query and feeds its vector to the policy as the ``memory`` group. The status
carries ``memory``: ``text`` (the scratchpad) and its counters.

Episode reset: the ``~/reset_episode`` service (``std_srvs/Trigger``) and any message on ``topics.reset_episode``
(``std_msgs/Empty``), in any lifecycle state, clear the scratchpad and the hint and orphan the query in flight (its
answer and note are dropped, never shown in the new episode); activate and the episode topic do the same. A real
setup calls it when a new episode or task starts (configs/deploy/fr3.yaml). A service call is recorded as a
message on ``topics.reset_episode``, so a replay resets where the node did.

Observation: with ``topics.observation`` set, the observation the policy was given at each step is published as a
``std_msgs/Float32MultiArray`` (the sidecar's schema order), just before that step's status.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from robot_rl.deploy.config import DeployConfig
from robot_rl.deploy.controller import PolicyController, StepResult
from robot_rl.deploy.ros_io import ACCEPTED, POSE_INPUTS, REJECTED, SIZE_INPUTS, pose_msg, s_to_stamp
from robot_rl.deploy.safety import Command, FilterState

#: A step triggered by an input may run this much before a full period has passed (s): with a
#: 1 kHz ``current_pose`` the steps then stay on the control rate without drifting by a message.
TRIGGER_SLACK_S = 0.002

#: Input and output topics recorded by ``--record`` (topic key -> ROS type name).
INPUT_TYPES = {
    "joint_states": "sensor_msgs/msg/JointState",
    **{k: "geometry_msgs/msg/PoseStamped" for k in POSE_INPUTS},
    **{k: "geometry_msgs/msg/Vector3Stamped" for k in SIZE_INPUTS},
}
#: Inputs of the teacher (a policy with a teacher group): recorded too, so a replay sees them.
TEACHER_INPUT_TYPES = {"image": "sensor_msgs/msg/Image", "episode": "std_msgs/msg/String",
                       "reset_episode": "std_msgs/msg/Empty"}
OUTPUT_TYPES = {
    "equilibrium_pose": "geometry_msgs/msg/PoseStamped",
    "twist": "geometry_msgs/msg/TwistStamped",
    "gripper": "std_msgs/msg/Float64",
    "status": "std_msgs/msg/String",  # carries the step time "t" and "state": replay steps on it
    "diagnostics": "diagnostic_msgs/msg/DiagnosticArray",
    "observation": "std_msgs/msg/Float32MultiArray",  # with topics.observation: what the policy was given
}
#: Outputs of a node with a teacher group: the teacher answers it handled (the replay feeds them back).
TEACHER_OUTPUT_TYPES = {"teacher_answers": "std_msgs/msg/String"}


def take_latest(subscription, now_s: float) -> tuple[object, float] | None:
    """Take the newest message waiting on an ``rclpy`` subscription that no executor spins (``trigger: poll``).

    The take is rclpy's own (``Subscription.handle.take_message``, as ``rclpy.executors`` and
    ``rclpy.wait_for_message`` take messages); with a KEEP_LAST depth-1 QoS the middleware has kept only the newest.

    Returns:
        ``(message, received_s)``: the message and its reception time by the middleware (s, the system clock, the
        node's with ``use_sim_time`` off), or ``now_s`` where the middleware gives none (0) or a time after
        ``now_s``; None when no message came since the last take.
    """
    taken = subscription.handle.take_message(subscription.msg_type, subscription.raw)
    if taken is None:
        return None
    msg, info = taken
    received_ns = info.get("received_timestamp", 0) if isinstance(info, dict) else 0
    received_s = received_ns * 1e-9
    return msg, (received_s if 0 < received_s <= now_s else now_s)


def make_policy_node(policy_dir: str | Path, cfg: DeployConfig, record: str | Path | None = None):
    """Build the lifecycle node (rclpy must be initialized). See the module docstring."""
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
    from geometry_msgs.msg import PoseStamped, TwistStamped, Vector3Stamped
    from rclpy.lifecycle import LifecycleNode, TransitionCallbackReturn
    from sensor_msgs.msg import Image, JointState
    from std_msgs.msg import Bool, Empty, Float32MultiArray, Float64, MultiArrayDimension, String
    from std_srvs.srv import Trigger

    class PolicyNode(LifecycleNode):
        def __init__(self):
            super().__init__(cfg.node_name)
            self.cfg, self.policy_dir = cfg, Path(policy_dir)
            self.controller: PolicyController | None = None
            self.recorder = None
            self._subs, self._pubs = [], {}
            self._timer = None
            self._diag_timer = None
            self._last_step_s = -np.inf
            self._due_s = -np.inf  # trigger=input: earliest time of the next step (s)
            self._fresh = False  # an EE pose arrived since the last step
            self._early_timer = None  # one-shot: steps on an EE pose that came early or ungathered
            self._early_at_s = np.inf  # when it fires (node clock, s)
            self._fresh_stamp_s = -np.inf  # header stamp of the pending EE pose (s)
            self._fresh_at_s = -np.inf  # when it arrived (node clock, s)
            self._teacher_client = None
            self._input_node = None  # trigger=poll: the unspun node that holds the sensor subscriptions
            self._polled: list = []  # trigger=poll: (input key, subscription)
            self._activations = 0  # on_activate calls that succeeded (the status reports it: replay re-activates)
            self._teacher_failing = False  # a failure streak is being reported (logged once at each change)
            self._warned_no_notes = False  # a memory policy's teacher writes no notes (warned once)
            self.episode_resets = 0  # ~/reset_episode calls and messages handled
            # Always available, whatever the lifecycle state: a stop must never need a transition.
            self.create_service(Trigger, "~/estop", self._on_estop_srv)
            self.create_service(Trigger, "~/reset_estop", self._on_reset_estop)
            self.create_subscription(Bool, cfg.topics.estop, self._on_estop_topic, 10)
            # A new episode or task: the operator's (or a task sequencer's) call, whatever the lifecycle state.
            self.create_service(Trigger, "~/reset_episode", self._on_reset_episode_srv)
            if cfg.topics.reset_episode:
                self.create_subscription(Empty, cfg.topics.reset_episode, self._on_reset_episode_topic, 10)

        # -- time ------------------------------------------------------------------------------

        def now_s(self) -> float:
            return self.get_clock().now().nanoseconds * 1e-9

        # -- lifecycle -------------------------------------------------------------------------

        def on_configure(self, state):
            try:
                self.controller = PolicyController(self.policy_dir, self.cfg)
            except (ValueError, FileNotFoundError, KeyError) as exc:
                self.get_logger().error(f"configure failed: {exc}")
                self.controller = None
                return TransitionCallbackReturn.FAILURE
            t, sensors, commands = self.cfg.topics, self.cfg.qos.sensors.profile(), self.cfg.qos.commands.profile()
            c = self.controller
            if c.teacher is not None:
                from robot_rl.deploy.teacher import TeacherClient

                tc = self.cfg.teacher
                self._teacher_client = TeacherClient(tc.url, timeout_s=tc.timeout_s,
                                                     connect_timeout_s=tc.connect_timeout_s,
                                                     api_key_env=tc.api_key_env, clock=self.now_s,
                                                     on_spec=self._on_teacher_spec)
                c.teacher_link = self._teacher_client
                self._teacher_client.start()
            if record is not None:
                from robot_rl.deploy.record import BagRecorder

                types = {**INPUT_TYPES, **OUTPUT_TYPES}
                if c.teacher is not None:
                    types.update({**TEACHER_INPUT_TYPES, **TEACHER_OUTPUT_TYPES})
                topics = {getattr(t, k): v for k, v in types.items() if getattr(t, k)}
                if t.reset_episode:  # recorded for every policy: a replay resets where the node did
                    topics[t.reset_episode] = TEACHER_INPUT_TYPES["reset_episode"]
                self.recorder = BagRecorder(record, topics)
            # Every configured input is subscribed; one the policy's observation does not read is ignored and
            # counted (a perception stack may publish more than this task needs).
            inputs = [("joint_states", JointState, t.joint_states, self._on_joint_state),
                      *((k, PoseStamped, getattr(t, k), lambda m, k=k: self._on_pose(k, m))
                        for k in POSE_INPUTS if getattr(t, k)),
                      *((k, Vector3Stamped, getattr(t, k), lambda m, k=k: self._on_size(k, m))
                        for k in SIZE_INPUTS if getattr(t, k))]
            if c.teacher is not None and t.image:
                inputs.append(("image", Image, t.image, self._on_image))
            if self.cfg.trigger == "poll":  # taken at the control rate, never called back (module docstring)
                from rclpy.node import Node

                self._input_node = Node(f"{self.cfg.node_name}_inputs", context=self.context)
                self._polled = [(key, self._input_node.create_subscription(typ, topic, lambda m: None, sensors))
                                for key, typ, topic, _ in inputs]
            else:
                self._subs = [self.create_subscription(typ, topic, cb, sensors) for _, typ, topic, cb in inputs]
            if t.episode:  # any message: a new episode (the sim bridge's episode results)
                self._subs.append(self.create_subscription(String, t.episode, self._on_episode, 10))
            for key, msg_type in (("equilibrium_pose", PoseStamped), ("twist", TwistStamped), ("gripper", Float64)):
                if getattr(t, key):
                    self._pubs[key] = self.create_publisher(msg_type, getattr(t, key), commands)
            self._pubs["status"] = self.create_publisher(String, t.status, 10)
            if t.observation:
                self._pubs["observation"] = self.create_publisher(Float32MultiArray, t.observation, 10)
            self._pubs["diagnostics"] = self.create_publisher(DiagnosticArray, t.diagnostics, 10)
            if c.teacher is not None:
                self._pubs["teacher_answers"] = self.create_publisher(String, t.teacher_answers, 10)
            self._diag_timer = self.create_timer(self.cfg.diagnostics_period_s, self._publish_diagnostics)
            self.get_logger().info(f"configured: task {c.task}, observation {c.policy.schema.describe_sizes()}, "
                                   f"inputs {', '.join(c.assembler.required_inputs)}, {c.rate_hz:g} Hz")
            if c.teacher is not None:
                extra = c.assembler.teacher_inputs
                self.get_logger().info(
                    f"teacher: {self.cfg.teacher.url}, D = {c.teacher.period_steps} periods, camera "
                    f"{t.image or 'none'}, privileged state "
                    f"{'from ' + ', '.join(extra or c.assembler.required_inputs) if c.assembler.privileged else 'none'}"
                    f"{' (' + c.privileged_note + ')' if c.privileged_note else ''}")
                if c.teacher.scratchpad is not None:
                    m = c.teacher.scratchpad.spec
                    self.get_logger().info(
                        f"scratchpad: {m.grounding_slots} grounding, {m.plan_slots} plan, {m.act_slots} act slots "
                        f"(objects {', '.join(m.objects)}; subtasks {', '.join(m.subtasks)}); cleared at activate, "
                        f"~/reset_episode{', ' + t.reset_episode if t.reset_episode else ''}"
                        f"{', ' + t.episode if t.episode else ''}")
            return TransitionCallbackReturn.SUCCESS

        def on_activate(self, state):
            self.poll_inputs()
            try:
                self.controller.activate()  # the safety filter, and a new teacher episode
            except Exception as exc:  # no EE pose yet, e-stopped, bad pose
                self.get_logger().error(f"activate failed: {exc}")
                return TransitionCallbackReturn.FAILURE
            self._activations += 1
            period = self.controller.period_s
            # trigger=input: a fast scheduling timer, so an early EE pose is used right when its period starts
            self._timer = self.create_timer(period, self._on_timer)
            self.get_logger().info("active: commanding")
            return super().on_activate(state)

        def on_deactivate(self, state):
            self._stop_commanding()
            return super().on_deactivate(state)

        def on_cleanup(self, state):
            self._teardown()
            return TransitionCallbackReturn.SUCCESS

        def on_shutdown(self, state):
            self._stop_commanding()
            self._teardown()
            return TransitionCallbackReturn.SUCCESS

        def on_error(self, state):
            self._stop_commanding()
            return TransitionCallbackReturn.SUCCESS

        def _stop_commanding(self) -> None:
            if self._timer is not None:
                self.destroy_timer(self._timer)
                self._timer = None
            if self.controller is None:
                return
            if self.controller.safety.state is FilterState.ACTIVE:
                self.controller.safety.deactivate()
            self._publish_hold()

        def close(self) -> None:
            """Stop commanding (publishing a hold if ROS still runs) and release everything."""
            try:
                self._stop_commanding()
            except Exception:  # the context may be gone after Ctrl-C; the hold is best effort
                pass
            self._teardown()

        def _teardown(self) -> None:
            if self.recorder is not None:  # first: the bag must be complete whatever happens next
                self.recorder.close()
                self.recorder = None
            if self._teacher_client is not None:
                self._teacher_client.close()
                self._teacher_client = None
            for sub in self._subs:
                self.destroy_subscription(sub)
            if self._input_node is not None:
                self._input_node.destroy_node()
                self._input_node, self._polled = None, []
            for pub in self._pubs.values():
                self.destroy_publisher(pub)
            self._subs, self._pubs = [], {}
            if self._diag_timer is not None:
                self.destroy_timer(self._diag_timer)
                self._diag_timer = None
            self.controller = None

        # -- inputs ----------------------------------------------------------------------------

        def poll_inputs(self) -> int:
            """``trigger: poll``: take the newest message of every input and hand it to the controller, received at
            its middleware reception time. Returns how many were taken (0 in the other trigger modes).
            """
            if not self._polled or self.controller is None:
                return 0
            now, a, n = self.now_s(), self.controller.assembler, 0
            for key, sub in self._polled:
                taken = take_latest(sub, now)
                if taken is None:
                    continue
                msg, received = taken
                n += 1
                self._record(key, msg, received)
                if key == "joint_states":
                    self._accepted(a.update_joint_state(msg, received))
                elif key in POSE_INPUTS:
                    self._accepted(a.update_pose(key, msg, received))
                elif key in SIZE_INPUTS:
                    self._accepted(a.update_size(key, msg, received))
                elif not self.controller.update_image(msg):
                    self.get_logger().warning(f"rejected: {a.last_rejection}", throttle_duration_sec=5.0)
            return n

        def _record(self, key: str, msg, at_s: float | None = None) -> None:
            topic = getattr(self.cfg.topics, key, None)
            if self.recorder is not None and topic and topic in self.recorder.topics:
                stamp_ns = self.get_clock().now().nanoseconds if at_s is None else round(at_s * 1e9)
                self.recorder.write(topic, msg, stamp_ns)

        def _accepted(self, status: str) -> bool:
            if status == REJECTED:
                self.get_logger().warning(f"rejected: {self.controller.assembler.last_rejection}",
                                          throttle_duration_sec=1.0)
            return status == ACCEPTED

        def _on_joint_state(self, msg) -> None:
            self._record("joint_states", msg)
            now = self.now_s()
            if self._accepted(self.controller.assembler.update_joint_state(msg, now)):
                self._try_step(now)

        def _on_size(self, key: str, msg) -> None:
            self._record(key, msg)
            now = self.now_s()
            if self._accepted(self.controller.assembler.update_size(key, msg, now)):
                self._try_step(now)

        def _on_episode(self, msg) -> None:
            self._record("episode", msg)
            if self.controller is not None:
                self.controller.new_episode()

        def _on_image(self, msg) -> None:
            self._record("image", msg)
            if not self.controller.update_image(msg):
                self.get_logger().warning(f"rejected: {self.controller.assembler.last_rejection}",
                                          throttle_duration_sec=5.0)

        def _on_teacher_spec(self, spec) -> None:  # from a worker thread, when /metadata answered anew
            reads = [w for w, on in (("the camera image", spec.needs_image), ("the privileged state", spec.needs_state))
                     if on] or ["nothing but the instruction"]
            self.get_logger().info(f"teacher server: {spec.model_id} ({spec.backend or 'unknown backend'}, protocol "
                                   f"{spec.protocol_version}) reads {' and '.join(reads)}")
            c = self.controller
            client = self._teacher_client
            if (c is not None and c.teacher is not None and c.teacher.scratchpad is not None and client is not None
                    and client.writes_notes is False and not self._warned_no_notes):
                self._warned_no_notes = True
                self.get_logger().warning(f"the policy observes the memory group but the teacher server "
                                          f"({spec.model_id}) writes no notes: the scratchpad stays empty")
            if c is not None and c.teacher is not None and spec.control_period_steps != c.teacher.period_steps:
                self.get_logger().warning(f"the teacher server plans for D = {spec.control_period_steps}, the policy "
                                          f"was trained with D = {c.teacher.period_steps}: its answers are read "
                                          f"as covering {c.teacher.period_steps} periods")

        def _on_pose(self, key: str, msg) -> None:
            self._record(key, msg)
            now = self.now_s()
            if not self._accepted(self.controller.assembler.update_pose(key, msg, now)):
                return
            if key == "ee_pose" and self.cfg.trigger == "input" and self._timer is not None:
                self._fresh = True
                self._fresh_stamp_s = self.controller.assembler.latest["ee_pose"].stamp_s
                self._fresh_at_s = now
            self._try_step(now)

        def _try_step(self, now: float) -> None:
            """trigger=input: step on the pending EE pose once it is due and its inputs are gathered.

            Gathered: every input is at least as new as the EE pose (a driver that publishes a
            whole state at once, like the sim bridge: without this the executor may run the step
            between the EE pose and the object pose of the same instant), or ``input_gather_s``
            has passed since the EE pose arrived (inputs on their own clocks, like a camera).
            """
            if not self._fresh or self._timer is None:
                return
            wait = self._due_s - TRIGGER_SLACK_S - now
            a = self.controller.assembler
            stamps = {**a.stamps(), **a.teacher_stamps()}
            gathered = all(stamps.get(k, -np.inf) >= self._fresh_stamp_s for k in a.gather_inputs)
            if not gathered:
                wait = max(wait, self._fresh_at_s + self.cfg.input_gather_s - now)
            if wait <= 0:
                self._step(now)
                return
            if self._early_timer is not None:
                if self._early_at_s <= now + wait:
                    return  # the one-shot already armed fires first and re-checks (not a timer per 1 kHz message)
                self.destroy_timer(self._early_timer)
            self._early_at_s = now + wait
            self._early_timer = self.create_timer(wait, self._on_early)

        def _on_early(self) -> None:
            self.destroy_timer(self._early_timer)
            self._early_timer = None
            self._try_step(self.now_s())

        def _on_timer(self) -> None:
            if self.cfg.trigger == "poll":
                self.poll_inputs()
            now = self.now_s()
            if self.cfg.trigger in ("timer", "poll"):
                self._step(now)
            elif now - self._last_step_s >= self.controller.period_s + TRIGGER_SLACK_S and (
                    self._fresh or self.controller.inputs_stale(now)):
                # trigger=input with no step for a period: an input that came in unseen, or stale
                # inputs, which the safety filter answers with a hold (the watchdog)
                self._step(now)

        # -- outputs ---------------------------------------------------------------------------

        def _step(self, now: float) -> None:
            period = self.controller.period_s
            # The schedule keeps its phase: a late step does not delay the next one (the next input
            # then counts as on time), but two steps are never closer than half a period.
            self._due_s = max(self._due_s + period, now + 0.5 * period)
            self._last_step_s = now
            self._fresh = False
            result: StepResult = self.controller.step(now)
            d = result.decision
            cmd_stamp = None
            if isinstance(d, Command) and self.controller.safety.state is FilterState.ACTIVE:
                cmd_stamp = self._publish_command(d)
            status = {"t": now, "state": self.controller.safety.state.value, "published": cmd_stamp is not None,
                      "hold": None if cmd_stamp is not None else getattr(d, "reason", "inactive"),
                      "clamped": list(getattr(d, "clamped", ())), "inference_ms": result.inference_s * 1e3,
                      "obs_stamp": result.obs_stamp_s, "cmd_stamp": cmd_stamp, "activations": self._activations,
                      "input_age_s": result.input_ages}
            if self.controller.assembler.clock_offset_s:
                status["clock_offset_s"] = dict(self.controller.assembler.clock_offset_s)
            if result.teacher is not None:
                status["teacher"] = result.teacher
                self._teacher_events(result, now)
            memory = self.controller.teacher.memory_status() if self.controller.teacher is not None else None
            if memory is not None:
                status["memory"] = memory
            if result.obs is not None and "observation" in self._pubs:
                obs = Float32MultiArray(data=[float(v) for v in result.obs])
                obs.layout.dim = [MultiArrayDimension(label="obs", size=len(obs.data), stride=len(obs.data))]
                self._publish("observation", obs)
            self._publish("status", String(data=json.dumps(status)))

        def _teacher_events(self, result: StepResult, now: float) -> None:
            """Publish (and record) each teacher answer the step handled; log a failure streak's start and end."""
            from robot_rl.deploy.teacher import DELIVERED, FAILED, INVALID

            teacher = self.controller.teacher
            for answer, outcome, query in result.teacher_answers:
                extra = {"outcome": outcome, "step_s": now, "step_index": teacher.step_index,
                         "episode": teacher.episode}
                if query is not None:
                    extra.update(query_episode=query.episode, episode_step=query.episode_step, made_s=query.made_s,
                                 state_stamp_s=query.state_stamp_s, image_stamp_s=query.image_stamp_s)
                self._publish("teacher_answers", String(data=answer.to_json(**extra)))
                if outcome in (FAILED, INVALID) and not self._teacher_failing:
                    self._teacher_failing = True
                    self.get_logger().warning(f"teacher: {teacher.last_error}; the hint ages, queries retry with "
                                              f"back-off up to {self.cfg.teacher.max_backoff_s:g} s")
                elif outcome == DELIVERED and self._teacher_failing:
                    self._teacher_failing = False
                    s = teacher.stats
                    self.get_logger().info(f"teacher: answering again ({s.failures} failures, {s.invalid} invalid "
                                           "answers so far)")

        def _publish(self, key: str, msg) -> None:
            pub = self._pubs.get(key)
            if pub is not None:
                pub.publish(msg)
                self._record(key, msg)

        def _publish_command(self, c: Command) -> float:
            """Publish the command's outputs; returns their header stamp (s)."""
            now = self.now_s()
            self._publish("equilibrium_pose", pose_msg(c.target_pos, c.target_quat, self.cfg.frames.base, now))
            twist = TwistStamped()
            twist.header.stamp = s_to_stamp(now)
            twist.header.frame_id = self.cfg.frames.base
            (twist.twist.linear.x, twist.twist.linear.y, twist.twist.linear.z,
             twist.twist.angular.x, twist.twist.angular.y, twist.twist.angular.z) = (float(v) for v in c.twist)
            self._publish("twist", twist)
            self._publish("gripper", Float64(data=float(c.gripper_width_m)))
            return now

        def _publish_hold(self) -> None:
            """Hold where the arm is: the current pose as the target, a zero twist."""
            try:
                pos, quat = self.controller.assembler.ee_pose()
            except Exception:
                return
            now = self.now_s()
            self._publish("equilibrium_pose", pose_msg(pos, quat, self.cfg.frames.base, now))
            twist = TwistStamped()
            twist.header.stamp = s_to_stamp(now)
            twist.header.frame_id = self.cfg.frames.base
            self._publish("twist", twist)

        def _publish_diagnostics(self) -> None:
            if self.controller is None:
                return
            diag = self.controller.diagnostics()
            status = DiagnosticStatus(name=f"{self.cfg.node_name}: safety", hardware_id="robot_rl")
            state = diag["state"]
            status.level = DiagnosticStatus.OK if state == "active" else (
                DiagnosticStatus.ERROR if state == "estopped" else DiagnosticStatus.WARN)
            status.message = f"{state}; last hold: {diag['last_hold_reason'] or '-'}"
            offsets = self.controller.assembler.clock_offset_s
            if offsets:  # a sender's clock runs ahead of this machine's: dp and recordings would be misdated
                status.level = max(status.level, DiagnosticStatus.WARN)
                status.message += ("; clock offset: stamps ahead of this node's clock on "
                                   + ", ".join(f"{k} (+{v:.3f} s)" for k, v in offsets.items())
                                   + ": sync the clocks (chrony or PTP)")
            status.values = [KeyValue(key=str(k), value=str(v)) for k, v in diag.items()]
            msg = DiagnosticArray(status=[status])
            msg.header.stamp = self.get_clock().now().to_msg()
            self._publish("diagnostics", msg)

        # -- e-stop ----------------------------------------------------------------------------

        def estop(self, reason: str) -> None:
            if self.controller is not None:
                self.controller.safety.estop(reason)
                if self._timer is not None:
                    self.get_logger().error(f"E-STOP ({reason}): deactivating")
                    self.trigger_deactivate()

        def _on_estop_srv(self, request, response):
            self.estop("service ~/estop")
            response.success, response.message = True, "e-stopped"
            return response

        def _on_estop_topic(self, msg) -> None:
            if msg.data:
                self.estop(f"topic {self.cfg.topics.estop}")

        # -- episode reset -----------------------------------------------------------------------

        def reset_episode(self, source: str) -> tuple[bool, str]:
            """A new episode: the scratchpad and the hint cleared, the query in flight orphaned (recorded on
            ``topics.reset_episode``). Returns ``(done, message)``; not done before configure.
            """
            if self.controller is None:
                return False, "not configured: nothing to reset"
            if self.recorder is not None and self.cfg.topics.reset_episode and source == "service":
                self._record("reset_episode", Empty())  # the topic's own messages are recorded on arrival
            self.episode_resets += 1
            if not self.controller.new_episode():
                return True, "new episode (a state-only policy: nothing to clear)"
            teacher = self.controller.teacher
            what = "scratchpad and hint" if teacher.scratchpad is not None else "hint"
            self.get_logger().info(f"episode reset ({source}): {what} cleared, episode {teacher.episode}")
            return True, f"new episode {teacher.episode}: {what} cleared, answers in flight dropped"

        def _on_reset_episode_srv(self, request, response):
            response.success, response.message = self.reset_episode("service")
            return response

        def _on_reset_episode_topic(self, msg) -> None:
            self._record("reset_episode", msg)
            self.reset_episode(f"topic {self.cfg.topics.reset_episode}")

        def _on_reset_estop(self, request, response):
            if self.controller is None:
                response.success, response.message = False, "not configured"
            else:
                self.controller.safety.reset_estop()
                response.success, response.message = True, "e-stop cleared; activate to resume"
            return response

    return PolicyNode()


def run_policy_node(policy_dir: str | Path, cfg: DeployConfig, record: str | Path | None = None,
                    autostart: bool = True) -> None:
    """Spin the node until Ctrl-C. With ``autostart`` it configures, waits for an EE pose and activates."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.lifecycle import TransitionCallbackReturn

    rclpy.init()
    node = make_policy_node(policy_dir, cfg, record)
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    try:
        if autostart:
            if node.trigger_configure() != TransitionCallbackReturn.SUCCESS:
                raise SystemExit("configure failed (see the log above)")
            deadline = time.monotonic() + 30.0
            while "ee_pose" not in node.controller.assembler.latest and time.monotonic() < deadline:
                executor.spin_once(timeout_sec=0.1)
                node.poll_inputs()
            if node.trigger_activate() != TransitionCallbackReturn.SUCCESS:
                raise SystemExit("activate failed (see the log above)")
        executor.spin()
    except KeyboardInterrupt:
        pass
    except Exception:
        if rclpy.ok():
            raise
        # Ctrl-C while the executor waits: rclpy's signal handler shut the context down first ("failed to
        # initialize wait set: the given context is not valid"); a normal stop
    finally:
        node.close()  # also after Ctrl-C, when rclpy's context is already shut down: the bag is closed
        node.destroy_node()
        rclpy.try_shutdown()
