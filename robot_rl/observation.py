"""The observation schema: the one place that knows an observation's groups, fields, sizes and offsets.

The policy observation is a set of named **observation groups** (DESIGN.md, "Observation groups"), each an
ordered list of :class:`ObsField` (name, size, frame, unit, components):

* ``state``: the task's ManiSkill ``state`` observation (its fields: :mod:`robot_rl.envs.obs_layout`, pinned
  against the simulator). Required at deployment: the ROS node's watchdog guards its inputs.
* ``teacher``: the delayed semantic interface (the teacher's last answer, its age and the motion since;
  issue 12). Optional at deployment: it ages, it never trips the watchdog.
* ``memory``: the scratchpad's fixed-size vector (issue 13). Optional, like ``teacher``.

One :class:`ObservationSchema` describes a run's observation. It is built from the config
(:func:`schema_for`), saved in the run directory (``observation_schema.json``), written into the export
sidecar, and the ROS node assembles each group from its sources with it. Every consumer imports this
module: ``grep -rn "robot_rl.observation" --include=*.py`` lists them.

**Form: one flat vector, groups at fixed offsets** (not a gymnasium ``spaces.Dict``). The groups are
concatenated in :data:`GROUP_ORDER` and the schema holds each group's offset, as rsl_rl's ``obs_groups``
concatenate terms and LeRobot names ``observation.*`` keys: the names live in the schema, the policy sees a
vector. Why not ``spaces.Dict`` with SB3's ``MultiInputPolicy`` and ``VecNormalize(norm_obs_keys=...)``:

* a state-only run stays exactly what it was (SB3 ``MlpPolicy`` on a ``Box``, one ``VecNormalize``), so the
  λ = 0 equivalence test and every figure measured so far still hold; ``MultiInputPolicy`` would put a
  ``CombinedExtractor`` in front (another network, another initialization);
* the exported policy keeps one ONNX input ``obs`` ``(B, size)`` and the ROS node one ONNX call; the GPU vec
  env adapter and SB3's rollout buffer keep one ``(N, size)`` array, with no per-key copies;
* per-group normalization is still possible: the schema gives each group's slice (a flag such as
  ``hint_valid`` is normalized like any other column today, as rsl_rl does).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np

__all__ = [
    "ObsField",
    "ObsGroup",
    "ObservationSchema",
    "SchemaMismatch",
    "GROUP_ORDER",
    "REQUIRED_GROUPS",
    "SCHEMA_VERSION",
    "SCHEMA_FILE",
    "schema_for",
    "schema_from_config",
    "memory_spec_from_config",
    "state_group",
]

#: Order of the groups in the flat vector (a schema holds a subset, in this order).
GROUP_ORDER: tuple[str, ...] = ("state", "teacher", "memory")
#: Groups the ROS node must have fresh inputs for (its watchdog guards them); the others age.
REQUIRED_GROUPS: frozenset[str] = frozenset({"state"})
#: Version of :meth:`ObservationSchema.to_dict`'s format.
SCHEMA_VERSION = 1
#: File name of the schema in a run directory (and the key of the export sidecar that holds it).
SCHEMA_FILE = "observation_schema.json"


class SchemaMismatch(ValueError):
    """Two schemas (or a schema and an observation) disagree; the message names the group and the field."""


@dataclass(frozen=True)
class ObsField:
    """One named block of an observation group.

    Attributes:
        name: the field's key (ManiSkill's for ``state``: ``qpos``, ``tcp_pose``, ...).
        size: number of floats.
        frame: ``"joint"`` (joint space, the Panda's ``qpos`` order), ``"world"`` (ManiSkill's scene frame,
            robot base at (-0.615, 0, 0) m with aligned axes), ``"robot_base"``, ``"tcp"`` or ``"none"``.
        unit: unit of each component, e.g. ``"m"``, ``"rad (arm), m (fingers)"``, ``"m, quaternion wxyz"``.
        description: what the value is and where it is read from.
        components: one label per float, ``len(components) == size`` (or empty).
        source: where a real robot gets the value, in the small language of
            :func:`robot_rl.deploy.ros_io.parse_source` (``"joints.position"``, ``"pose(tcp, +x)"``,
            ``"position(object) - position(tcp)"``, ``"grasp(object, 0.04)"``, ...); empty for a field the ROS
            node does not assemble from messages (the ``teacher`` and ``memory`` groups have their own sources).

    Raises:
        ValueError: ``size < 1`` or a ``components`` list of another length.
    """

    name: str
    size: int
    frame: str
    unit: str
    description: str
    components: tuple[str, ...] = ()
    source: str = ""

    def __post_init__(self) -> None:
        if int(self.size) < 1:
            raise ValueError(f"ObsField {self.name}: size must be >= 1, got {self.size}")
        if self.components and len(self.components) != self.size:
            raise ValueError(f"ObsField {self.name}: {len(self.components)} components for size {self.size}")

    def to_dict(self) -> dict:
        """JSON-ready mapping of every attribute; :meth:`from_dict` reads it back."""
        return {"name": self.name, "size": int(self.size), "frame": self.frame, "unit": self.unit,
                "description": self.description, "components": list(self.components), "source": self.source}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ObsField:
        """Inverse of :meth:`to_dict`; only ``name`` and ``size`` are required (``KeyError`` otherwise)."""
        return cls(str(d["name"]), int(d["size"]), str(d.get("frame", "none")), str(d.get("unit", "")),
                   str(d.get("description", "")), tuple(d.get("components", ()) or ()), str(d.get("source", "")))


@dataclass(frozen=True)
class ObsGroup:
    """A named, ordered list of fields: one observation group.

    Attributes:
        name: ``"state"``, ``"teacher"`` or ``"memory"`` (:data:`GROUP_ORDER`).
        fields: the fields, in vector order.
        description: what the group is and who produces it.
        required: the ROS node needs fresh inputs for it (its watchdog guards them): True for ``state``.

    Raises:
        ValueError: an unknown group name, no fields, or two fields of one name.
    """

    name: str
    fields: tuple[ObsField, ...]
    description: str = ""
    required: bool = False

    def __post_init__(self) -> None:
        if self.name not in GROUP_ORDER:
            raise ValueError(f"unknown observation group {self.name!r}; groups: {', '.join(GROUP_ORDER)}")
        if not self.fields:
            raise ValueError(f"observation group {self.name!r} has no fields")
        names = [f.name for f in self.fields]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"observation group {self.name!r}: fields {dup} appear twice")

    @property
    def size(self) -> int:
        """Number of floats of the group."""
        return sum(f.size for f in self.fields)

    def field_slices(self) -> dict[str, slice]:
        """``{field name: slice}`` into the group's own block."""
        out, offset = {}, 0
        for f in self.fields:
            out[f.name] = slice(offset, offset + f.size)
            offset += f.size
        return out

    def to_dict(self) -> dict:
        """JSON-ready mapping with the group's ``size`` and its fields' :meth:`ObsField.to_dict`."""
        return {"name": self.name, "description": self.description, "required": bool(self.required),
                "size": self.size, "fields": [f.to_dict() for f in self.fields]}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ObsGroup:
        """Inverse of :meth:`to_dict`; ``required`` defaults to whether the group is in ``REQUIRED_GROUPS``."""
        return cls(str(d["name"]), tuple(ObsField.from_dict(f) for f in d["fields"]), str(d.get("description", "")),
                   bool(d.get("required", d["name"] in REQUIRED_GROUPS)))


@dataclass(frozen=True)
class ObservationSchema:
    """A run's observation: groups in :data:`GROUP_ORDER` concatenated into one flat ``float32`` vector.

    Attributes:
        task: the task's env id (``"RRL-PushCube-Sparse-v1"``).
        groups: the groups, in vector order (``state`` first).

    Raises:
        ValueError: no ``state`` group, a group twice, or groups out of :data:`GROUP_ORDER`.
    """

    task: str
    groups: tuple[ObsGroup, ...]
    version: int = field(default=SCHEMA_VERSION)

    def __post_init__(self) -> None:
        names = [g.name for g in self.groups]
        if "state" not in names:
            raise ValueError("an observation schema needs a 'state' group")
        if len(set(names)) != len(names):
            raise ValueError(f"observation groups appear twice: {names}")
        if names != [g for g in GROUP_ORDER if g in names]:
            raise ValueError(f"observation groups {names} are not in the order {list(GROUP_ORDER)}")

    # -- sizes and offsets -------------------------------------------------------------------------

    @property
    def size(self) -> int:
        """Length of the observation vector."""
        return sum(g.size for g in self.groups)

    @property
    def group_names(self) -> tuple[str, ...]:
        """The groups' names, in observation order."""
        return tuple(g.name for g in self.groups)

    def group(self, name: str) -> ObsGroup:
        """The group called ``name``.

        Raises:
            KeyError: the schema has no such group (the message lists the groups it has).
        """
        for g in self.groups:
            if g.name == name:
                return g
        raise KeyError(f"observation group {name!r} is not in this schema (groups: {', '.join(self.group_names)})")

    def group_slices(self) -> dict[str, slice]:
        """``{group name: slice}`` into the observation vector."""
        out, offset = {}, 0
        for g in self.groups:
            out[g.name] = slice(offset, offset + g.size)
            offset += g.size
        return out

    def field_slices(self, group: str) -> dict[str, slice]:
        """``{field name: slice}`` of one group's fields, into the observation vector."""
        start = self.group_slices()[self.group(group).name].start
        return {k: slice(s.start + start, s.stop + start) for k, s in self.group(group).field_slices().items()}

    def rows(self) -> list[dict]:
        """One JSON-ready row per field, in vector order: ``group, name, offset, size, frame, unit,
        description, components`` (what the sidecar's ``layout`` lists and what errors name).
        """
        out, offset = [], 0
        for g in self.groups:
            for f in g.fields:
                out.append({"group": g.name, "offset": offset, **f.to_dict()})
                offset += f.size
        return out

    def field_at(self, index: int) -> str:
        """``"group.field"`` that holds vector component ``index``."""
        for r in self.rows():
            if r["offset"] <= index < r["offset"] + r["size"]:
                return f"{r['group']}.{r['name']}"
        raise IndexError(f"index {index} outside an observation of size {self.size}")

    # -- vectors -----------------------------------------------------------------------------------

    def split(self, obs: np.ndarray) -> dict[str, np.ndarray]:
        """``(..., size)`` -> ``{group: (..., group size)}`` views.

        Raises:
            SchemaMismatch: the last dimension is not :attr:`size`.
        """
        x = np.asarray(obs)
        if x.shape[-1:] != (self.size,):
            raise SchemaMismatch(f"observation has shape {x.shape}, the schema of {self.task} has size {self.size} "
                                 f"({self.describe_sizes()})")
        return {name: x[..., s] for name, s in self.group_slices().items()}

    def join(self, parts: Mapping[str, np.ndarray]) -> np.ndarray:
        """``{group: (..., group size)}`` -> ``(..., size) float32`` in the schema's order.

        Raises:
            SchemaMismatch: a group missing, an extra group, or a group of the wrong size (named).
        """
        extra = sorted(set(parts) - set(self.group_names))
        if extra:
            raise SchemaMismatch(f"observation groups {extra} are not in the schema ({', '.join(self.group_names)})")
        blocks = []
        for g in self.groups:
            if g.name not in parts:
                raise SchemaMismatch(f"observation group {g.name!r} missing (first field {g.fields[0].name!r})")
            b = np.asarray(parts[g.name], dtype=np.float32)
            if b.shape[-1:] != (g.size,):
                raise SchemaMismatch(f"observation group {g.name!r} has {b.shape[-1:]} values, expected {g.size}")
            blocks.append(b)
        return np.concatenate(blocks, axis=-1)

    def describe_sizes(self) -> str:
        """``"state 35 + teacher 15 = 50"``."""
        return " + ".join(f"{g.name} {g.size}" for g in self.groups) + f" = {self.size}"

    # -- comparison --------------------------------------------------------------------------------

    def differences(self, other: ObservationSchema) -> list[str]:
        """How ``other`` differs from this schema, field by field: ``["state.tcp_pose: size 7 != 6", ...]``
        (empty when they describe the same vector). Descriptions are not compared.
        """
        out = []
        mine, theirs = {g.name: g for g in self.groups}, {g.name: g for g in other.groups}
        for name in GROUP_ORDER:
            a, b = mine.get(name), theirs.get(name)
            if a is None and b is None:
                continue
            if a is None or b is None:
                g = a or b
                where = "only in the first" if b is None else "only in the second"
                out.append(f"{name}: group {where} schema (first field {g.fields[0].name!r})")
                continue
            for i in range(max(len(a.fields), len(b.fields))):
                fa = a.fields[i] if i < len(a.fields) else None
                fb = b.fields[i] if i < len(b.fields) else None
                if fa is None or fb is None:
                    f = fa or fb
                    out.append(f"{name}.{f.name}: field {i} is only in the "
                               f"{'first' if fb is None else 'second'} schema")
                    continue
                if fa.name != fb.name:
                    out.append(f"{name}.{fa.name}: field {i} is {fa.name!r} in the first schema, "
                               f"{fb.name!r} in the second")
                    continue
                for attr in ("size", "frame", "unit", "components", "source"):
                    va, vb = getattr(fa, attr), getattr(fb, attr)
                    if va != vb:
                        out.append(f"{name}.{fa.name}: {attr} {va!r} != {vb!r}")
        return out

    def check_matches(self, other: ObservationSchema, what: str = "schema") -> None:
        """Raise :class:`SchemaMismatch` naming the first differing group and field, if any.

        Args:
            other: the schema to compare with (e.g. an exported policy's).
            what: how to call ``other`` in the message (``"the policy's sidecar"``).
        """
        diff = self.differences(other)
        if diff:
            more = f" (and {len(diff) - 1} more)" if len(diff) > 1 else ""
            raise SchemaMismatch(f"{what} does not match the expected observation of {self.task}: {diff[0]}{more}")

    # -- serialization -----------------------------------------------------------------------------

    def to_dict(self) -> dict:
        """JSON-ready form (``version``, ``task``, ``size``, ``groups`` with their fields and sizes)."""
        return {"version": self.version, "task": self.task, "size": self.size,
                "groups": [g.to_dict() for g in self.groups]}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ObservationSchema:
        """Inverse of :meth:`to_dict`.

        Raises:
            ValueError: an unsupported ``version``, a malformed entry (the message names it), or a stored
                ``size`` that does not match the fields.
        """
        version = d.get("version")
        if version != SCHEMA_VERSION:
            raise ValueError(f"observation schema version {version!r} is not supported "
                             f"(this code reads {SCHEMA_VERSION})")
        try:
            schema = cls(str(d["task"]), tuple(ObsGroup.from_dict(g) for g in d["groups"]), int(version))
        except (KeyError, TypeError) as err:
            raise ValueError(f"malformed observation schema: missing or bad entry {err}") from None
        if "size" in d and int(d["size"]) != schema.size:
            raise ValueError(f"observation schema says size {d['size']} but its fields sum to {schema.size}")
        return schema

    def save(self, path: str | Path) -> None:
        """Write :meth:`to_dict` to ``path`` as indented JSON."""
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> ObservationSchema:
        """Read a schema written by :meth:`save`.

        Raises:
            FileNotFoundError: no such file. ValueError: not a valid schema.
        """
        try:
            data = json.loads(Path(path).read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"{path} is not valid JSON: {err}") from None
        return cls.from_dict(data)


def state_group(task_id: str) -> ObsGroup:
    """The ``state`` group of a task: its ManiSkill ``state`` fields (:mod:`robot_rl.envs.obs_layout`).

    Raises:
        ValueError: a task without a layout (the message lists the tasks that have one).
    """
    from robot_rl.envs.obs_layout import observation_layout

    return ObsGroup("state", tuple(observation_layout(task_id)),
                    "the task's ManiSkill state observation (obs_mode='state'), pinned against the simulator "
                    "in tests/envs/test_obs_layout.py", required=True)


def schema_for(task_id: str, extra_groups: Iterable[ObsGroup] = ()) -> ObservationSchema:
    """The observation schema of a run on ``task_id``: its ``state`` group, then ``extra_groups`` (the
    ``teacher`` and ``memory`` groups a config enables), in :data:`GROUP_ORDER`.

    Args:
        task_id: env id or paper name.
        extra_groups: further groups (not ``state``).

    Raises:
        ValueError: an unknown task or group, or a group given twice.
    """
    from robot_rl.envs.obs_layout import resolve_task

    groups = [state_group(task_id), *extra_groups]
    groups.sort(key=lambda g: GROUP_ORDER.index(g.name))
    return ObservationSchema(resolve_task(task_id), tuple(groups))


def schema_from_config(cfg) -> ObservationSchema:
    """The observation schema of a run with ``cfg`` (a :class:`robot_rl.config.TrainConfig`): the one place a
    run's observation is decided: the task's ``state`` group, then the ``teacher`` group of
    ``interface.features`` (the delayed interface, :func:`robot_rl.interface.teacher_group`) when any are set,
    then the ``memory`` group of the scratchpad (:func:`robot_rl.memory.memory_spec`) when ``memory.enabled``.
    """
    extra = []
    if cfg.interface.features:
        from robot_rl.interface.delayed import teacher_group

        extra.append(teacher_group(cfg.interface.features))
    if cfg.memory.enabled:
        extra.append(memory_spec_from_config(cfg).group())
    return schema_for(cfg.task, extra)


def memory_spec_from_config(cfg):
    """The :class:`~robot_rl.memory.MemorySpec` of a run with ``cfg``: its task's vocabulary and ``memory.*``."""
    from robot_rl.envs.obs_layout import resolve_task
    from robot_rl.memory import memory_spec

    m = cfg.memory
    return memory_spec(resolve_task(cfg.task), m.grounding_slots, m.plan_slots, m.act_slots, m.max_note_chars)
