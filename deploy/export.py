"""Export a trained run's policy as one ONNX file plus a JSON sidecar (DESIGN.md, Interfaces).

``export_policy(run_dir)`` writes ``RUN_DIR/export/policy.onnx`` and ``policy.json``. The ROS 2 node
depends only on these two files (:class:`robot_rl.deploy.policy.OnnxPolicy` loads and checks them).

The graph (rsl_rl's exporter idea: a small ``torch.nn.Module`` around normalizer and actor, exported
with ``torch.onnx.export``) maps the raw observation to the action SB3 would take:

- input ``obs``: ``(B, obs_dim) float32``, the raw observation in the run's observation schema
  (:mod:`robot_rl.observation`: groups ``state`` [, ``teacher``, ``memory``] at fixed offsets; dynamic batch ``B``);
- observation normalization of the run's ``VecNormalize`` baked in, exactly as SB3's
  ``VecNormalize.normalize_obs``: ``clip((obs - mean) / sqrt(var + epsilon), -clip_obs, clip_obs)``;
- the deterministic head: the Gaussian mean (``DiagGaussianDistribution.mode()``, the ``action_net``
  output, no tanh squash: SB3's ``MlpPolicy`` has ``squash_output=False``), clipped to the action space
  bounds ``[-1, 1]`` as ``BasePolicy.predict`` does for a ``Box`` space when it does not squash;
- output ``actions``: ``(B, 7) float32`` in the env's normalized ``pd_ee_delta_pose`` convention
  (the sidecar's ``action`` section maps it to metres, radians and the gripper opening).

No pickle is loaded (a run directory from someone else may hold one that runs code when unpickled): the
normalization statistics come from the checkpoint's ``vecnormalize.json`` (:func:`robot_rl.runs.vecnormalize_to_dict`)
and the policy's weights from the SB3 zip's ``policy.pth`` through SB3's own
``load_from_zip_file(load_data=False)`` (``torch.load(weights_only=True)``), into an ``ActorCriticPolicy`` built
from the zip's ``policy_kwargs`` (plain JSON in its ``data`` entry, read with ``json``, never SB3's
``json_to_data``, which unpickles). A run from before ``vecnormalize.json`` existed holds only ``vecnormalize.pkl``:
it is refused, naming the file, unless ``trust_pickle=True`` (``robot-rl export --trust-pickle``), which unpickles it
once and writes ``vecnormalize.json`` beside it.

Exporter: torch 2.13's default ``torch.onnx.export(dynamo=True)`` needs the ``onnxscript`` package;
the TorchScript exporter (``dynamo=False``, opset :data:`OPSET`) needs only ``onnx`` and handles
this MLP exactly, so it is used (its DeprecationWarning is silenced). If a later torch drops it, the
dynamo exporter is tried instead.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import math
import pickle
import warnings
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "ONNX_FILE",
    "SIDECAR_FILE",
    "INPUT_NAME",
    "OUTPUT_NAME",
    "OPSET",
    "export_policy",
    "sha256_file",
]

#: Sidecar ``format`` tag and version; bump the version on an incompatible change of policy.json.
#: Version 2: the observation is described by the run's observation schema (``observation.schema``, groups
#: of fields; :mod:`robot_rl.observation`). Version 1 listed the ``state`` fields only
#: (``observation.layout``); :class:`robot_rl.deploy.policy.OnnxPolicy` still reads it as a state-only schema.
#: A run with a ``teacher`` group adds a ``teacher`` section (still version 2: no reader must change, a reader that
#: does not know it ignores it; the ROS node asks for ``teacher.period_steps`` when a teacher-group sidecar lacks it).
#: A run with the scratchpad adds a ``memory`` section the same way (``max_note_chars``, the teacher's period).
FORMAT = "robot_rl.policy"
FORMAT_VERSION = 2
ONNX_FILE = "policy.onnx"
SIDECAR_FILE = "policy.json"
#: Names of the graph's single input and output.
INPUT_NAME = "obs"
OUTPUT_NAME = "actions"
#: ONNX opset of the exported graph (onnxruntime >= 1.12 runs it).
OPSET = 17
#: Default export directory inside a run directory.
EXPORT_DIR = "export"


def sha256_file(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _exported_module(policy, mean: np.ndarray, std: np.ndarray, clip_obs: float | None,
                     low: np.ndarray, high: np.ndarray):
    """``torch.nn.Module``: raw obs ``(B, D)`` -> normalized -> SB3 actor -> mean action clipped to ``[low, high]``."""
    import torch as th
    from torch import nn

    class ExportedPolicy(nn.Module):
        def __init__(self):
            super().__init__()
            self.features_extractor = policy.pi_features_extractor
            self.mlp_extractor = policy.mlp_extractor
            self.action_net = policy.action_net
            self.register_buffer("obs_mean", th.as_tensor(mean, dtype=th.float32))
            self.register_buffer("obs_std", th.as_tensor(std, dtype=th.float32))
            self.register_buffer("act_low", th.as_tensor(low, dtype=th.float32))
            self.register_buffer("act_high", th.as_tensor(high, dtype=th.float32))
            self.clip_obs = None if clip_obs is None else float(clip_obs)

        def forward(self, obs):
            x = (obs - self.obs_mean) / self.obs_std
            if self.clip_obs is not None:
                x = th.clamp(x, -self.clip_obs, self.clip_obs)
            features = self.features_extractor(x)  # FlattenExtractor: (B, D) unchanged
            latent_pi = self.mlp_extractor.forward_actor(features)
            mean_actions = self.action_net(latent_pi)  # DiagGaussianDistribution.mode()
            return th.minimum(th.maximum(mean_actions, self.act_low), self.act_high)  # predict()'s np.clip

    return ExportedPolicy().eval()


def _check_policy(policy) -> None:
    """Only the policy class export reproduces exactly: SB3's ActorCriticPolicy with a diagonal Gaussian
    head, no squashing, flat Box observations and Box actions.
    """
    from gymnasium import spaces
    from stable_baselines3.common.distributions import DiagGaussianDistribution
    from stable_baselines3.common.policies import ActorCriticPolicy
    from stable_baselines3.common.torch_layers import FlattenExtractor

    problems = []
    if not isinstance(policy, ActorCriticPolicy):
        problems.append(f"policy class {type(policy).__name__} is not an SB3 ActorCriticPolicy")
    elif type(policy.action_dist) is not DiagGaussianDistribution:
        problems.append(f"action distribution {type(policy.action_dist).__name__} "
                        "(only DiagGaussianDistribution; no gSDE)")
    if getattr(policy, "squash_output", False):
        problems.append("squash_output=True")
    if not isinstance(policy.observation_space, spaces.Box) or len(policy.observation_space.shape) != 1:
        problems.append(f"observation space {policy.observation_space} is not a flat Box")
    if not isinstance(policy.action_space, spaces.Box):
        problems.append(f"action space {policy.action_space} is not a Box")
    if not problems and not isinstance(policy.pi_features_extractor, FlattenExtractor):
        problems.append(f"features extractor {type(policy.pi_features_extractor).__name__} (only FlattenExtractor)")
    if problems:
        raise ValueError("cannot export this policy: " + "; ".join(problems))


#: The SB3 ``policy_kwargs`` a run's policy may carry (robot_rl.trainer.build_model sets these two only).
POLICY_KWARGS = ("net_arch", "log_std_init")


def _load_policy(zip_path: Path, obs_dim: int, act_dim: int):
    """The SB3 ``ActorCriticPolicy`` saved in ``zip_path`` without unpickling anything (see the module docstring).

    Args:
        zip_path: an SB3 2.x ``model.zip`` of GuidedPPO (``MlpPolicy``).
        obs_dim: ``D`` of the run's observation schema.
        act_dim: action size (7).

    Returns:
        ``(policy, num_timesteps)``: the policy in eval mode on the CPU, and the env steps it was trained for.

    Raises:
        ValueError: not SB3's ``ActorCriticPolicy``, gSDE, ``policy_kwargs`` beyond :data:`POLICY_KWARGS` (or
            pickled ones), or weights whose shapes do not fit ``obs_dim`` (torch's message).
    """
    from gymnasium import spaces
    from stable_baselines3.common.policies import ActorCriticPolicy
    from stable_baselines3.common.save_util import load_from_zip_file

    with zipfile.ZipFile(zip_path) as archive:
        data = json.loads(archive.read("data"))  # plain JSON: the ":serialized:" entries stay base64 text
    cls = data.get("policy_class", {})
    if cls.get("__module__") != "stable_baselines3.common.policies" or \
            not str(cls.get("__init__", "")).startswith("<function ActorCriticPolicy.__init__"):
        raise ValueError(f"cannot export {zip_path}: its policy class is not SB3's ActorCriticPolicy (MlpPolicy)")
    if data.get("use_sde"):
        raise ValueError(f"cannot export {zip_path}: gSDE (use_sde=True) is not reproduced")
    kwargs = data.get("policy_kwargs", {})
    if not isinstance(kwargs, dict) or ":serialized:" in kwargs or set(kwargs) - set(POLICY_KWARGS):
        raise ValueError(f"cannot export {zip_path}: policy_kwargs {sorted(kwargs)} beyond {list(POLICY_KWARGS)}")
    _, params, _ = load_from_zip_file(zip_path, load_data=False, device="cpu")  # .pth: torch.load(weights_only=True)
    policy = ActorCriticPolicy(spaces.Box(-np.inf, np.inf, (obs_dim,), np.float32),
                               spaces.Box(-1.0, 1.0, (act_dim,), np.float32), lambda _: 0.0, **kwargs)
    try:
        policy.load_state_dict(params["policy"])
    except RuntimeError as err:
        raise ValueError(f"checkpoint {zip_path} does not fit an observation of {obs_dim} values: {err}") from None
    policy.set_training_mode(False)
    return policy, int(data["num_timesteps"])


def _normalization_stats(checkpoint: Path, trust_pickle: bool) -> dict | None:
    """The checkpoint's VecNormalize statistics (:func:`robot_rl.runs.read_vecnormalize_json`), or None for a run
    without observation normalization.

    Raises:
        FileNotFoundError: only ``vecnormalize.pkl`` (an old run) and not ``trust_pickle``: the message names the
            file and ``--trust-pickle``.
    """
    from robot_rl.runs import VECNORM_JSON, read_vecnormalize_json, vecnormalize_to_dict

    path, pkl = checkpoint / VECNORM_JSON, checkpoint / "vecnormalize.pkl"
    if path.exists():
        return read_vecnormalize_json(path)
    if not pkl.exists():
        return None
    if not trust_pickle:
        raise FileNotFoundError(
            f"{path} is missing: this run keeps its normalization statistics only in the pickle {pkl}, and "
            "unpickling a file can run any code in it. If you trust this run directory, run `robot-rl export "
            "RUN_DIR --trust-pickle` (export_policy(..., trust_pickle=True)) once: it writes the JSON beside it")
    warnings.warn(f"unpickling {pkl} (trust_pickle) and writing {path}", stacklevel=3)
    with open(pkl, "rb") as f:
        venv = pickle.load(f)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(vecnormalize_to_dict(venv)))
    tmp.replace(path)
    return read_vecnormalize_json(path)


def _env_facts(task_id: str) -> dict[str, Any]:
    """Facts the sidecar reads from a real env of the task: control and sim rates, spaces, the arm and
    gripper controller configs and the finger joint limits (ManiSkill 3.0.1, Panda).
    """
    from robot_rl.envs import make_env

    env = make_env(task_id, seed=0)
    try:
        env.reset()
        u = env.unwrapped
        arm = u.agent.controller.controllers["arm"].config
        grip = u.agent.controller.controllers["gripper"].config
        names = [j.name for j in u.agent.robot.get_active_joints()]
        qlim = u.agent.robot.get_qlimits()[0].cpu().numpy()
        fingers = [i for i, n in enumerate(names) if n in grip.joint_names]
        return {
            "control_freq": int(u.control_freq),
            "sim_freq": int(u.sim_freq),
            "control_mode": u.control_mode,
            "obs_dim": int(env.observation_space.shape[0]),
            "action_low": env.action_space.low.tolist(),
            "action_high": env.action_space.high.tolist(),
            "robot_base_pose": u.agent.robot.pose.raw_pose[0].cpu().numpy().tolist(),
            "arm": {"pos_lower": float(arm.pos_lower), "pos_upper": float(arm.pos_upper),
                    "rot_lower": float(arm.rot_lower), "rot_upper": float(arm.rot_upper),
                    "frame": arm.frame, "use_delta": bool(arm.use_delta), "use_target": bool(arm.use_target),
                    "ee_link": arm.ee_link, "joint_names": list(arm.joint_names)},
            "gripper": {"lower": float(grip.lower), "upper": float(grip.upper), "joint_names": list(grip.joint_names),
                        "joint_limits": [[float(a), float(b)] for a, b in qlim[fingers]]},
        }
    finally:
        env.close()


def _action_section(facts: dict) -> dict:
    """The sidecar's ``action`` section: layout and scaling of one ``pd_ee_delta_pose`` action to
    physical units (ManiSkill 3.0.1 ``PDEEPoseController``, ``PDJointPosMimicController``).
    """
    from robot_rl.geometry import CONTROLLER_ROT_SIGN

    arm, grip = facts["arm"], facts["gripper"]
    if arm["pos_lower"] != -arm["pos_upper"] or arm["rot_lower"] != -arm["rot_upper"]:
        raise ValueError(f"asymmetric pd_ee_delta_pose bounds {arm}: the sidecar's scale-and-sign form does not apply")
    rot_sign = math.copysign(1.0, arm["rot_lower"])
    if rot_sign != CONTROLLER_ROT_SIGN:
        raise ValueError(f"the controller's rotation sign is {rot_sign}, robot_rl.geometry.CONTROLLER_ROT_SIGN "
                         f"says {CONTROLLER_ROT_SIGN}: ManiSkill changed (issue #1469?); update both")
    g_lo, g_hi = grip["lower"], grip["upper"]
    lim = grip["joint_limits"]
    return {
        "dim": 7,
        "control_mode": facts["control_mode"],
        "low": facts["action_low"],
        "high": facts["action_high"],
        "applied_for_s": 1.0 / facts["control_freq"],
        "fields": [
            {
                "name": "delta_pos", "offset": 0, "size": 3, "components": ["dx", "dy", "dz"],
                "unit": "m", "scale_per_unit": arm["pos_upper"], "frame": "robot_base",
                "description": "target TCP position = current TCP position (robot base frame) + a * scale_per_unit; "
                               "a clipped to [-1, 1] first",
            },
            {
                "name": "delta_rot", "offset": 3, "size": 3, "components": ["droll", "dpitch", "dyaw"],
                "unit": "rad", "scale_per_unit": arm["rot_upper"], "sign": rot_sign,
                "representation": "euler_xyz", "frame": "robot_base_axes_about_tcp",
                "norm_clip": 1.0,
                "description": "if |a| > 1 then a = a / |a|; delta = a * scale_per_unit * sign (rad, XYZ Euler "
                               "angles); target orientation = R(delta) * current TCP orientation (rotation about the "
                               "robot base axes, about the TCP; ManiSkill frame 'root_aligned_body_rotation'). "
                               "sign = -1: a +1 "
                               "command turns the TCP by -0.1 rad (ManiSkill issue #1469)",
            },
            {
                "name": "gripper", "offset": 6, "size": 1, "components": ["gripper"],
                "unit": "1 (-1 closed .. +1 open)",
                "finger_target_m": [g_lo, g_hi],
                "width_target_m": [2 * g_lo, 2 * g_hi],
                "finger_joint_limits_m": lim,
                "width_limits_m": [lim[0][0] + lim[1][0], lim[0][1] + lim[1][1]],
                "description": f"absolute command: each finger joint's position target = {g_lo} + (a + 1) / 2 * "
                               f"{g_hi - g_lo:g} m (both fingers, mimic), a clipped to [-1, 1]; the gripper width "
                               f"target is twice that. -1 targets {g_lo} m per finger, below the joint limit "
                               f"{lim[0][0]} m, so a closed gripper keeps squeezing (ManiSkill: 'a trick to have "
                               f"force when the object is thin'); +1 targets {g_hi} m per finger "
                               f"({2 * g_hi:g} m width, fully open)",
            },
        ],
        "controller": {
            "arm": {k: arm[k] for k in ("frame", "use_delta", "use_target", "ee_link", "joint_names")},
            "note": "use_target=false: every command is relative to the TCP pose measured at that control step, "
                    "not to the previous target; the joint-space PD tracks the IK target for one control period",
        },
    }


def _teacher_section(cfg, spec, facts: dict) -> dict:
    """The sidecar's ``teacher`` section of a run with the delayed interface: what the ROS node needs to fill the
    ``teacher`` group as training did (the period ``D``, the features, the query and validity semantics) and what
    the policy was trained against (the delay model, the teacher's kind).
    """
    d = int(cfg.teacher.control_period_steps)
    period_s = 1.0 / facts["control_freq"]
    delay = cfg.interface.delay.model_dump()
    return {
        "group": "teacher",
        "features": list(cfg.interface.features),
        "control_period_steps": d,
        "control_period_s": d * period_s,
        "env_control_period_s": period_s,
        "instruction": spec.instruction,
        "task_id": spec.env_id,
        "training_delay": delay,
        "training_teacher": {"kind": cfg.teacher.kind},
        "compensate_targets": bool(cfg.interface.compensate_targets),
        "action_convention": "hint: the teacher's answer in the env's normalized pd_ee_delta_pose units over the "
                             "teacher's period of control_period_steps env steps (position and rotation may reach D; "
                             "rotation sign -1, ManiSkill #1469; gripper -1 closed .. +1 open): POST /act/batch's",
        "query": "query whenever no query is in flight and the last answer has played out over control_period_steps "
                 "control periods (robot_rl.trainer.build_guidance(evaluation=True)); a failed or invalid answer "
                 "(NaN, wrong shape, |pos|,|rot| > D, |gripper| > 1) is dropped and the next query waits a back-off",
        "hint_valid": "1 once an answer has arrived in the current episode (0 before: every teacher feature is then "
                      "0); an episode starts at activate and at each episode reset, and answers to queries made "
                      "before it are dropped",
        "dt": "seconds from the observation the hint was computed from (the camera image's stamp, else the EE "
              "pose's) to the control step",
        "dp": "TCP translation (m, robot base axes), rotation rotvec(R_q^T R_t) (rad) and gripper width change (m) "
              "from that observation to the current one",
    }


def _memory_section(cfg) -> dict:
    """The sidecar's ``memory`` section of a run with the scratchpad: what the ROS node needs besides the ``memory``
    group itself (whose fields' components are the vocabularies: :meth:`robot_rl.memory.MemorySpec.from_group`).
    """
    m = cfg.memory
    return {
        "group": "memory",
        "grounding_slots": int(m.grounding_slots),
        "plan_slots": int(m.plan_slots),
        "act_slots": int(m.act_slots),
        "max_note_chars": int(m.max_note_chars),
        "control_period_steps": int(cfg.teacher.control_period_steps),
        "notes": "written from the teacher's answers (POST /act/batch notes, robot_rl.memory line format) at the "
                 "control step that delivers each answer; a failed, invalid or orphaned answer loses its own note; "
                 "the scratchpad text is sent with every query (scratchpads)",
        "episode": "the scratchpad is emptied at every episode start: activate, the episode topic and the node's "
                   "~/reset_episode (std_srvs/Trigger) or topics.reset_episode (std_msgs/Empty)",
    }


def _export_onnx(module, obs_dim: int, path: Path) -> None:
    import torch as th

    dummy = th.zeros(2, obs_dim, dtype=th.float32)
    kwargs = dict(input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], opset_version=OPSET,
                  dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}})
    with th.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # "legacy TorchScript-based ONNX export"
        try:
            th.onnx.export(module, (dummy,), str(path), dynamo=False, **kwargs)
        except (TypeError, NotImplementedError, RuntimeError) as err:
            if "dynamo" not in str(err) and "TorchScript" not in str(err):
                raise
            # a torch without the TorchScript exporter: the dynamo one (needs `pip install onnxscript`)
            th.onnx.export(module, (dummy,), str(path), dynamo=True, **kwargs)


def export_policy(run_dir, out_dir: str | Path | None = None, trust_pickle: bool = False) -> Path:
    """Export a run's latest checkpoint as ``policy.onnx`` + ``policy.json``.

    Args:
        run_dir: a run directory (path or :class:`robot_rl.runs.RunDir`) with ``config.yaml`` and
            ``checkpoints/latest/model.zip`` (and ``vecnormalize.json`` when the run normalizes
            observations). Nothing in it is unpickled (module docstring).
        out_dir: where to write; default ``RUN_DIR/export``. Created if missing; existing files of
            the same names are replaced.
        trust_pickle: an old run with only ``vecnormalize.pkl``: unpickle it (it can run code) and write
            ``vecnormalize.json`` beside it; False: refuse it.

    Returns:
        the output directory. Its ``policy.onnx`` maps ``obs (B, obs_dim) float32`` (raw observation,
        :mod:`robot_rl.envs.obs_layout`) to ``actions (B, 7) float32`` in ``[-1, 1]``;
        ``policy.json`` holds ``format``/``format_version``, ``task`` (id, instruction, ...),
        ``obs_dim``, ``action_dim``, ``control_rate_hz``, ``observation`` (layout with offsets,
        frames, units; normalization parameters, baked in), ``action`` (layout and scaling to m, rad
        and gripper opening), ``onnx`` (file, sha256, opset, input/output names), ``source`` (run
        directory, checkpoint, ``num_timesteps``) and, for a run with the delayed interface, ``teacher``
        (the teacher's period ``D`` in env steps and seconds, the features, the instruction, the training delay
        model and teacher kind, and the query, ``hint_valid``, ``dt`` and ``dp`` semantics) and, for a run with the
        scratchpad, ``memory`` (slot counts, ``max_note_chars``, the teacher's period, when notes are written and
        when the scratchpad is emptied; the ``memory`` group in the schema carries the vocabularies).

    Builds one env of the task (about 1 s) to read the control rate and controller configs.

    Raises:
        FileNotFoundError: not a run directory, no checkpoint, or only ``vecnormalize.pkl`` without
            ``trust_pickle`` (the message names the file), or ``ppo.normalize_obs`` and no statistics at all.
        ValueError: a recurrent run (ppo.recurrent), a policy the export cannot reproduce exactly (not SB3's Gaussian
            MlpPolicy), or
            a checkpoint whose observation size does not match the run's observation schema.
        SchemaMismatch: the run's saved schema differs from what its config gives (names group and field).
    """
    import onnx

    from robot_rl.envs import get_task
    from robot_rl.envs.obs_layout import ROBOT_BASE_POS_WORLD, ROBOT_BASE_QUAT_WORLD
    from robot_rl.observation import schema_from_config
    from robot_rl.runs import RunDir

    run = run_dir if isinstance(run_dir, RunDir) else RunDir(run_dir)
    cfg = run.config()  # FileNotFoundError if not a run directory
    if cfg.ppo.recurrent:
        raise ValueError(f"{run.path}: ppo.recurrent (RecurrentPPO, an LSTM) is not exportable: the export and the ROS "
                         "node run a feed-forward policy, one ONNX call per control step without a recurrent state")
    run.recover_checkpoint()
    if not run.has_checkpoint():
        raise FileNotFoundError(f"{run.path} has no checkpoint to export ({run.checkpoint / 'model.zip'} is missing)")
    spec = get_task(cfg.task)
    schema = schema_from_config(cfg)
    run.check_schema(schema)
    out = Path(out_dir) if out_dir is not None else run.path / EXPORT_DIR
    out.mkdir(parents=True, exist_ok=True)

    facts = _env_facts(spec.env_id)
    obs_dim = schema.size
    low, high = (np.asarray(facts[k], dtype=np.float32) for k in ("action_low", "action_high"))
    act_dim = int(low.shape[0])
    policy, num_timesteps = _load_policy(run.checkpoint / "model.zip", obs_dim, act_dim)
    _check_policy(policy)

    vn = _normalization_stats(run.checkpoint, trust_pickle)
    if vn is None and cfg.ppo.normalize_obs:
        raise FileNotFoundError(f"{run.path} normalizes observations (ppo.normalize_obs) but its checkpoint "
                                f"{run.checkpoint} holds no vecnormalize.json")
    if vn is not None and vn["norm_obs"]:
        mean = vn["obs_rms"]["mean"]
        if mean.shape != (obs_dim,):
            raise ValueError(f"normalization statistics of {mean.shape[0]} values != the run's observation schema "
                             f"({schema.describe_sizes()}) of {spec.env_id}")
        std = np.sqrt(vn["obs_rms"]["var"] + vn["epsilon"])
        clip_obs, eps = float(vn["clip_obs"]), float(vn["epsilon"])
        normalization = {"baked_in": True, "formula": "clip((obs - mean) / sqrt(var + epsilon), -clip, clip)",
                         "epsilon": eps, "clip": clip_obs, "source": "stable_baselines3 VecNormalize"}
    else:
        mean, std, clip_obs = np.zeros(obs_dim), np.ones(obs_dim), None
        normalization = {"baked_in": False}

    module = _exported_module(policy, mean, std, clip_obs, low, high)
    onnx_path = out / ONNX_FILE
    _export_onnx(module, obs_dim, onnx_path)
    proto = onnx.load(str(onnx_path))
    proto.producer_name = "robot_rl"
    proto.doc_string = (f"robot_rl policy for {spec.env_id}: obs (B, {obs_dim}) raw -> actions (B, {act_dim}); "
                        f"see {SIDECAR_FILE}")
    for key, value in (("task_id", spec.env_id), ("obs_dim", str(obs_dim)), ("sidecar", SIDECAR_FILE)):
        proto.metadata_props.add(key=key, value=value)
    onnx.checker.check_model(proto)
    onnx.save(proto, str(onnx_path))

    if facts["obs_dim"] != schema.group("state").size:
        raise ValueError(f"the env's state observation has {facts['obs_dim']} values, the schema's state group "
                         f"{schema.group('state').size}")
    base = np.asarray(facts["robot_base_pose"])
    if not (np.allclose(base[:3], ROBOT_BASE_POS_WORLD, atol=1e-5)
            and np.allclose(np.abs(base[3:]), np.abs(ROBOT_BASE_QUAT_WORLD), atol=1e-5)):
        raise ValueError(f"the env's robot base pose {base.tolist()} differs from robot_rl.envs.obs_layout's "
                         f"{ROBOT_BASE_POS_WORLD} {ROBOT_BASE_QUAT_WORLD}: update the layout")
    sidecar = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "task": {"id": spec.env_id, "paper_name": spec.paper_name, "upstream_id": spec.upstream_id,
                 "instruction": spec.instruction,
                 "max_episode_steps": int(cfg.env.max_episode_steps or spec.max_episode_steps)},
        "obs_dim": obs_dim,
        "action_dim": act_dim,
        "control_rate_hz": facts["control_freq"],
        "sim_rate_hz": facts["sim_freq"],
        "onnx": {"file": ONNX_FILE, "sha256": sha256_file(onnx_path), "opset": OPSET,
                 "input": {"name": INPUT_NAME, "dtype": "float32", "shape": ["batch", obs_dim]},
                 "output": {"name": OUTPUT_NAME, "dtype": "float32", "shape": ["batch", act_dim]}},
        "observation": {
            "schema": schema.to_dict(),
            "layout": schema.rows(),
            "frames": {
                "world": "ManiSkill scene frame: origin on the table top, z up; the robot base sits at "
                         "robot_base_pose_world with its axes aligned to the world's",
                "joint": "joint space, panda_joint1..7 then panda_finger_joint1..2",
                "none": "no frame",
            },
            "robot_base_pose_world": {"position_m": list(ROBOT_BASE_POS_WORLD),
                                      "quaternion_wxyz": list(ROBOT_BASE_QUAT_WORLD)},
            "normalization": normalization,
            "note": "feed the raw observation, its groups concatenated at the schema's offsets (layout lists every "
                    "field with its group and offset): normalization is inside the ONNX graph",
        },
        "action": _action_section(facts),
        **({"teacher": _teacher_section(cfg, spec, facts)} if "teacher" in schema.group_names else {}),
        **({"memory": _memory_section(cfg)} if "memory" in schema.group_names else {}),
        "deterministic_head": "Gaussian mean (action_net output, no tanh squash), clipped to [low, high] "
                              "as stable_baselines3 BasePolicy.predict(deterministic=True) does",
        "source": {"run_dir": str(run.path.resolve()), "checkpoint": str(run.checkpoint.relative_to(run.path)),
                   "num_timesteps": num_timesteps, "mode": cfg.mode, "seed": int(cfg.seed),
                   "exported_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")},
    }
    tmp = out / (SIDECAR_FILE + ".tmp")
    tmp.write_text(json.dumps(sidecar, indent=2) + "\n")
    tmp.replace(out / SIDECAR_FILE)
    return out
