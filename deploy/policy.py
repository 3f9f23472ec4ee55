"""Run an exported policy (``policy.onnx`` + ``policy.json``, :mod:`robot_rl.deploy.export`) with onnxruntime.

:class:`OnnxPolicy` is what the ROS 2 node holds: it needs numpy, onnxruntime and the two files, not
torch, stable-baselines3 or ManiSkill. It refuses a sidecar that does not describe the ONNX file next
to it, so a node never runs a policy with the wrong observation layout or action scaling.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["OnnxPolicy", "SUPPORTED_FORMAT_VERSIONS"]

#: ``policy.json`` format versions this loader reads (robot_rl.deploy.export.FORMAT_VERSION). Version 1
#: (before observation groups) listed only the ``state`` fields: it is read as a state-only schema, and its
#: fields have no ROS sources, so the ROS node asks for a re-export (``robot-rl export RUN_DIR``).
SUPPORTED_FORMAT_VERSIONS = (1, 2)
_FORMAT = "robot_rl.policy"
_SIDECAR = "policy.json"
_ACTION_DIM = 7  # pd_ee_delta_pose: dx dy dz droll dpitch dyaw gripper


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _sidecar_schema(sc: dict, path: Path):
    """The observation schema of a sidecar: ``observation.schema`` (format 2), or, for a format-1 sidecar, a
    state-only schema rebuilt from its ``observation.layout`` (all format-1 policies observed the state only).
    """
    from robot_rl.observation import ObservationSchema, ObsField, ObsGroup

    obs = sc.get("observation", {})
    try:
        if "schema" in obs:
            return ObservationSchema.from_dict(obs["schema"])
        fields = tuple(ObsField.from_dict({k: v for k, v in f.items() if k != "source"}) for f in obs["layout"])
        old = ObservationSchema(sc["task"]["id"], (ObsGroup("state", fields, "format-1 sidecar", required=True),))
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"{path}: bad observation schema: {err}") from None
    # A format-1 layout that is exactly today's layout of its task gets today's fields, with their ROS sources;
    # any other keeps its fields without sources, and the ROS node refuses it, asking for a re-export.
    from robot_rl.observation import schema_for

    try:
        current = schema_for(old.task)
    except ValueError:
        return old
    strip = ObservationSchema(old.task, (ObsGroup("state", tuple(
        ObsField(f.name, f.size, f.frame, f.unit, f.description, f.components) for f in current.group("state").fields),
        required=True),))
    return current if not old.differences(strip) else old


class OnnxPolicy:
    """An exported robot_rl policy: raw observation in, ``pd_ee_delta_pose`` action out.

    Args:
        path: the export directory (holding ``policy.json`` and the ONNX file it names), or the
            ``policy.json`` file itself.
        expected_task: if given, the sidecar's task id (or paper name) must equal it.
        expected_obs_dim: if given, the policy's observation size must equal it (e.g. the length of
            the vector the ROS 2 node builds).
        intra_op_threads: onnxruntime intra-op threads (default 1: a 256x256 MLP gains nothing from
            more and a robot computer's cores are busy with the control loop).

    Attributes:
        sidecar: the parsed ``policy.json``.
        schema: the policy's :class:`~robot_rl.observation.ObservationSchema` (groups and fields).
        obs_dim, action_dim: the schema's size (35 for PushCube's state, 42 PickCube's) and 7.
        task_id, instruction: the task's env id and language instruction.
        control_rate_hz: control steps per second the policy was trained at (20).

    Raises:
        FileNotFoundError: ``policy.json`` or the ONNX file is missing.
        ValueError: the sidecar is not a robot_rl policy of a supported format version; the ONNX
            file's sha256 differs from the sidecar's (the sidecar does not match the ONNX file); the
            graph's input/output names or shapes differ from the sidecar's (``obs`` ``(B, obs_dim)``,
            ``actions`` ``(B, 7)``); the observation schema is malformed or its size is not ``obs_dim``; or the
            task / observation size differs from ``expected_task`` / ``expected_obs_dim``.
    """

    def __init__(self, path: str | Path, expected_task: str | None = None, expected_obs_dim: int | None = None,
                 intra_op_threads: int = 1):
        import onnxruntime as ort

        path = Path(path)
        sidecar_path = path if path.is_file() else path / _SIDECAR
        if not sidecar_path.exists():
            raise FileNotFoundError(f"{sidecar_path} not found: export the run first "
                                    "(robot_rl.deploy.export.export_policy)")
        self.dir = sidecar_path.parent
        try:
            sc: dict[str, Any] = json.loads(sidecar_path.read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"{sidecar_path} is not valid JSON: {err}") from None
        if sc.get("format") != _FORMAT:
            raise ValueError(f"{sidecar_path} is not a robot_rl policy sidecar "
                             f"(format {sc.get('format')!r}, expected {_FORMAT!r})")
        if sc.get("format_version") not in SUPPORTED_FORMAT_VERSIONS:
            raise ValueError(f"{sidecar_path}: format_version {sc.get('format_version')!r} not supported "
                             f"(this loader reads {SUPPORTED_FORMAT_VERSIONS})")
        self.sidecar = sc
        onnx_info = sc["onnx"]
        self.onnx_path = self.dir / onnx_info["file"]
        if not self.onnx_path.exists():
            raise FileNotFoundError(f"{self.onnx_path} (named by {sidecar_path}) not found")
        digest = _sha256(self.onnx_path)
        if digest != onnx_info["sha256"]:
            raise ValueError(f"the sidecar {sidecar_path} does not match the ONNX file {self.onnx_path}: sha256 "
                             f"{digest} != {onnx_info['sha256']} recorded at export (re-export the run)")

        self.obs_dim = int(sc["obs_dim"])
        self.action_dim = int(sc["action_dim"])
        self.task_id = sc["task"]["id"]
        self.instruction = sc["task"]["instruction"]
        self.control_rate_hz = float(sc["control_rate_hz"])
        self.schema = _sidecar_schema(sc, sidecar_path)
        if self.schema.size != self.obs_dim:
            raise ValueError(f"{sidecar_path}: the observation schema has {self.schema.describe_sizes()} values, but "
                             f"obs_dim is {self.obs_dim}")
        if self.action_dim != _ACTION_DIM:
            raise ValueError(f"{sidecar_path}: action_dim {self.action_dim}, expected {_ACTION_DIM} (pd_ee_delta_pose)")
        if expected_task is not None and expected_task not in (self.task_id, sc["task"].get("paper_name")):
            raise ValueError(f"policy is for task {self.task_id!r}, expected task {expected_task!r}")
        if expected_obs_dim is not None and int(expected_obs_dim) != self.obs_dim:
            raise ValueError(f"policy takes observations of size {self.obs_dim} ({self.task_id}), "
                             f"expected obs size {expected_obs_dim}")

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = int(intra_op_threads)
        opts.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(self.onnx_path), sess_options=opts, providers=["CPUExecutionProvider"])
        self._check_graph(onnx_info)
        self.input_name = self.session.get_inputs()[0].name
        self.output_name = self.session.get_outputs()[0].name

    def _check_graph(self, onnx_info: dict) -> None:
        """The graph has exactly the sidecar's input ``(B, obs_dim)`` and output ``(B, action_dim)``."""
        ins, outs = self.session.get_inputs(), self.session.get_outputs()
        want_in, want_out = onnx_info["input"]["name"], onnx_info["output"]["name"]
        if [i.name for i in ins] != [want_in]:
            raise ValueError(f"ONNX inputs {[i.name for i in ins]} do not match the sidecar's input {want_in!r}")
        if [o.name for o in outs] != [want_out]:
            raise ValueError(f"ONNX outputs {[o.name for o in outs]} do not match the sidecar's output {want_out!r}")
        for what, node, size, key in (("input", ins[0], self.obs_dim, "obs_dim"),
                                      ("output", outs[0], self.action_dim, "action_dim")):
            shape = list(node.shape)
            if len(shape) != 2 or shape[1] != size:
                raise ValueError(f"ONNX {what} {node.name!r} has shape {shape}, but the sidecar's {key} is {size} "
                                 f"(expected [batch, {size}]): the sidecar does not match the ONNX file")
            if node.type != "tensor(float)":
                raise ValueError(f"ONNX {what} {node.name!r} is {node.type}, expected tensor(float)")

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        """Actions for raw observations.

        Args:
            obs: ``(obs_dim,)`` or ``(B, obs_dim)``, any real dtype (cast to float32): the raw
                observation in the sidecar's observation schema (``self.schema``); not normalized.

        Returns:
            ``(7,)`` or ``(B, 7) float32`` in ``[-1, 1]``: ``[dx, dy, dz, droll, dpitch, dyaw, gripper]``
            in the normalized ``pd_ee_delta_pose`` convention (``sidecar["action"]`` gives the scaling:
            0.1 m and 0.1 rad per unit with rotation sign -1, gripper -1 closed .. +1 open).

        Raises:
            ValueError: wrong shape, or a NaN/inf in the observation.
        """
        x = np.asarray(obs, dtype=np.float32)
        single = x.ndim == 1
        if single:
            x = x[None]
        if x.ndim != 2 or x.shape[1] != self.obs_dim:
            raise ValueError(f"obs must be ({self.obs_dim},) or (B, {self.obs_dim}) for {self.task_id}, "
                             f"got shape {np.shape(obs)}")
        if not np.all(np.isfinite(x)):
            bad = sorted({self.schema.field_at(int(j)) for j in np.flatnonzero(~np.isfinite(x).all(axis=0))})
            raise ValueError(f"obs has NaN or inf in field(s) {bad}")
        actions = self.session.run([self.output_name], {self.input_name: np.ascontiguousarray(x)})[0]
        return actions[0] if single else actions

    def __repr__(self) -> str:
        src = self.sidecar.get("source", {})
        return (f"OnnxPolicy(task={self.task_id!r}, obs_dim={self.obs_dim}, action_dim={self.action_dim}, "
                f"rate={self.control_rate_hz:g} Hz, num_timesteps={src.get('num_timesteps')}, dir={str(self.dir)!r})")
