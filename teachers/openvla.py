r"""OpenVLA teacher backend: a local vision-language-action checkpoint behind the :class:`Teacher` protocol.

Pipeline per batch (one ``generate`` call for all ``B`` rows):
image + instruction -> prompt (:func:`robot_rl.teachers.wire.openvla_prompt`) -> processor
(left padding, attention mask) -> greedy ``generate`` of exactly 7 tokens ->
:func:`decode_action_tokens` (256 bins over [-1, 1] on the last 256 vocabulary ids) ->
:func:`unnormalize` (q01/q99 of the chosen ``unnorm_key``) -> gripper to [0, 1]
(:func:`gripper_to_unit`) -> OpenVLA convention (``predict_raw``) -> env convention
(:func:`robot_rl.teachers.wire.openvla_to_env`, ``act``).

The decoding follows OpenVLA's ``OpenVLAForActionPrediction.predict_action``
(``prismatic/extern/hf/modeling_prismatic.py``) and ``ActionTokenizer``
(``prismatic/vla/action_tokenizer.py``) in github.com/openvla/openvla, re-written here in numpy so
it is ours, batched and unit-tested; nothing of OpenVLA's remote code is imported.

Checkpoint layout. OpenVLA's published checkpoints use ``trust_remote_code`` Prismatic classes
registered for ``AutoModelForVision2Seq``; that auto class is gone in transformers 5 and the
Prismatic classes do not load there (FACTS.md, VLA teachers). This backend therefore loads a
**transformers-native** layout with ``AutoModelForImageTextToText`` + ``AutoProcessor`` (e.g. a
Llava-style model whose processor expands an image placeholder token): a real OpenVLA checkpoint
must first be converted to such a layout. :mod:`robot_rl.testing.tiny_vla` writes a tiny
random-weight checkpoint in this layout for tests and benchmarks.

Mapping decisions (each pinned by ``tests/teachers/test_openvla.py``):

- Image placeholder: Prismatic inserts the image patch embeddings right after ``<s>`` (BOS) in
  its own ``forward``; a native processor instead needs a placeholder token in the text. When the
  processor has an ``image_token`` (Llava's ``<image>``), it is prepended to the prompt, so the
  sequence is ``<s> <image>... In: What action ...?\nOut:`` -- the same order as OpenVLA's.
- Token 29871: OpenVLA appends Llama-2's empty token ``"▁"`` (id 29871) when the prompt does not
  already end with it, because it followed ``Out:`` at training time. This is done here only when
  the tokenizer's base vocabulary is Llama-2's (``tokenizer.vocab_size == 32000``); for other
  vocabularies the id means something else and nothing is appended.
- Gripper: OpenVLA's data pipeline standardizes the gripper action to absolute
  ``+1 = open, 0 = close`` (``prismatic/vla/datasets/rlds/oxe/transforms.py``, e.g.
  ``rt1_dataset_transform``) and does not normalize it (mask false), so the decoded bin center is
  returned as is by ``predict_action`` and lies in [-1, 1] although training targets were in
  [0, 1]; OpenVLA's own evaluation then maps it with ``2 g - 1`` and ``sign``
  (``normalize_gripper_action`` in ``experiments/robot/robot_utils.py``), i.e. thresholds at 0.5.
  ``predict_raw`` clips the gripper to [0 (closed), 1 (open)] (the range OpenVLA's server answers,
  FACTS.md), which keeps that 0.5 threshold and makes ``openvla_to_env`` give [-1, 1].

Notes mode (``notes=True``; Notes-to-Self, Haresh et al. 2026, read from ``paligemma_runner.py`` of
``Qualcomm-AI-research/scratchpad-vla``; FACTS.md, Anchors; the format is
:mod:`robot_rl.memory.notes_to_self`'s). Per row:

1. prompt: OpenVLA's, with ``"\n<plan>{scratchpad}</plan>"`` after its question when the row's
   scratchpad is not empty (:func:`~robot_rl.memory.notes_to_self.prompt_with_scratchpad`, applied to
   :meth:`OpenVLATeacher.build_prompt`: ``<image>In: What action should the robot take to
   {instr}?\n<plan>...</plan>\nOut:``);
2. forced prefix: the ``<plan>`` token for an empty scratchpad (the episode's first query), else
   ``<think>`` (:func:`~robot_rl.memory.notes_to_self.forced_prefix`), appended to the prompt's ids as
   Notes-to-Self appends its tokenized prefix (after token 29871 where that rule applies: ``"Out: <plan>"``
   tokenizes so with Llama-2's vocabulary);
3. greedy generation of text until the ``<act>`` token, then the act clause (text such as ``<done>``, then
   the 7 action tokens); a row stops once 7 action tokens follow its ``<act>``, at EOS, or after
   ``notes_max_new_tokens`` tokens (Notes-to-Self's budget is 250);
4. the text before the action tokens (prefix included) is parsed first
   (:func:`~robot_rl.memory.notes_to_self.parse_generation`: ``<plan>``, ``<think>``, ``<done>``), then the
   7 action tokens are de-tokenized exactly as in plain mode;
5. the row's note is :func:`~robot_rl.memory.notes_to_self.note_of` of its generation (plan text, plus the
   think text when the act clause holds ``<done>``).

A malformed generation (no ``<act>`` before EOS or the budget, an unclosed ``<plan>``/``<think>``, fewer
than 7 action tokens after ``<act>``, a text token among them) makes its row invalid: NaN actions (which
:func:`robot_rl.teacher_protocol.validate_teacher_actions` refuses) and the note ``""``; the reason is in
``extras["generation_errors"]``. It never raises. The tags must each be one token of the tokenizer (a checkpoint
fine-tuned for Notes-to-Self adds them; the tiny checkpoint has them): the constructor refuses a tokenizer that
splits one, since the ``<act>`` boundary and the forced prefix are found and placed as token ids. The 7 ids after
``<act>`` must be action tokens (the last 256 ids); plain mode clips any id to a bin, as OpenVLA does, but in notes
mode a text id there means the text did not end where the model put ``<act>``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from robot_rl.geometry import ACTION_DIM, GRIPPER_INDEX
from robot_rl.memory.notes_to_self import (
    ACT,
    DONE,
    PLAN_CLOSE,
    PLAN_OPEN,
    THINK_CLOSE,
    THINK_OPEN,
    Generation,
    MalformedGeneration,
    forced_prefix,
    note_of,
    parse_generation,
    prompt_with_scratchpad,
)

from .base import TeacherRequest, TeacherRequestError, TeacherResponse, TeacherSpec
from .wire import openvla_prompt, openvla_to_env

#: OpenVLA's action discretization: ``N_ACTION_BINS`` uniform bin edges over
#: ``[ACTION_MIN, ACTION_MAX]`` give 255 bin centers (``ActionTokenizer``).
N_ACTION_BINS = 256
ACTION_MIN, ACTION_MAX = -1.0, 1.0
BIN_EDGES = np.linspace(ACTION_MIN, ACTION_MAX, N_ACTION_BINS)
BIN_CENTERS = (BIN_EDGES[:-1] + BIN_EDGES[1:]) / 2.0
#: Llama-2's base vocabulary size and its empty-string token ``"▁"`` (``predict_action``).
LLAMA2_VOCAB_SIZE = 32000
LLAMA2_EMPTY_TOKEN_ID = 29871
#: File with OpenVLA dataset statistics next to the checkpoint (written by OpenVLA's fine-tuning).
DATASET_STATISTICS_FILE = "dataset_statistics.json"
#: ``config.json`` key holding the dataset statistics of OpenVLA checkpoints.
CONFIG_NORM_STATS_KEY = "norm_stats"
#: Gripper range of OpenVLA's convention: 0 closed, 1 open.
GRIPPER_CLOSED, GRIPPER_OPEN = 0.0, 1.0
#: ``torch_dtype`` names the constructor accepts besides ``"auto"``.
TORCH_DTYPES = ("float32", "float16", "bfloat16")
#: Notes-to-Self's tags; in notes mode each must be a single token of the checkpoint's tokenizer.
NOTES_TAGS = (PLAN_OPEN, PLAN_CLOSE, THINK_OPEN, THINK_CLOSE, ACT, DONE)
#: Default token budget of a notes-mode row: Notes-to-Self's ``DEFAULT_MAX_NEW_TOKENS`` (``paligemma_runner.py``).
DEFAULT_NOTES_MAX_NEW_TOKENS = 250


# ----------------------------------------------------------------------------------------------
# Pure decoding steps


def decode_action_tokens(token_ids: np.ndarray, vocab_size: int) -> np.ndarray:
    """De-tokenize OpenVLA action tokens into normalized actions.

    Token ``vocab_size - 1 - k`` is bin ``k``: ``discretized = vocab_size - id``,
    ``k = clip(discretized - 1, 0, 254)``, value ``BIN_CENTERS[k]``, where
    ``BIN_CENTERS[k] = -1 + (2k + 1) / 255``. Ids below the action range clip to bin 254
    (``1 - 1/255``), ids at or above ``vocab_size`` clip to bin 0 (``-1 + 1/255``), exactly as
    OpenVLA's ``predict_action`` does.

    Args:
        token_ids: ``(B, D)`` (or any shape) integer token ids.
        vocab_size: the tokenizer's base vocabulary size (Llama-2: 32000), *not* the model's padded
            embedding size.

    Returns:
        ``float64`` array of ``token_ids``' shape, normalized actions in ``(-1, 1)``.

    Raises:
        ValueError: non-integer ``token_ids`` or ``vocab_size < 256``.

    Source: ``OpenVLAForActionPrediction.predict_action`` and
    ``ActionTokenizer.decode_token_ids_to_actions`` (github.com/openvla/openvla).
    """
    ids = np.asarray(token_ids)
    if ids.dtype.kind not in "iu":
        raise ValueError(f"token_ids must be integers, got dtype {ids.dtype}")
    if vocab_size < N_ACTION_BINS:
        raise ValueError(f"vocab_size must be >= {N_ACTION_BINS}, got {vocab_size}")
    discretized = int(vocab_size) - ids.astype(np.int64)
    bin_index = np.clip(discretized - 1, 0, BIN_CENTERS.shape[0] - 1)
    return BIN_CENTERS[bin_index]


def unnormalize(a_norm: np.ndarray, stats: Mapping[str, Any]) -> np.ndarray:
    """Map normalized actions back to dataset units with OpenVLA's q01/q99 statistics.

    ``a = 0.5 (a_norm + 1) (q99 - q01) + q01`` where ``mask`` is true, ``a = a_norm`` elsewhere
    (the gripper: its mask is false in OpenVLA's statistics). A missing ``mask`` means all true,
    as in OpenVLA.

    Args:
        a_norm: ``(B, D)`` or ``(D,)`` normalized actions.
        stats: one dataset's ``"action"`` statistics: ``"q01"``, ``"q99"`` (``D`` floats each) and
            optionally ``"mask"`` (``D`` bools).

    Returns:
        ``float64`` array of ``a_norm``'s shape, in the dataset's units (OpenVLA: metres and radians).

    Raises:
        ValueError: missing ``q01``/``q99`` or lengths that do not match ``D``.

    Source: ``OpenVLAForActionPrediction.predict_action`` (github.com/openvla/openvla).
    """
    a = np.asarray(a_norm, dtype=np.float64)
    for name in ("q01", "q99"):
        if name not in stats:
            raise ValueError(f"action statistics lack {name!r} (have {sorted(stats)})")
    low = np.asarray(stats["q01"], dtype=np.float64)
    high = np.asarray(stats["q99"], dtype=np.float64)
    mask = np.asarray(stats.get("mask", np.ones_like(low, dtype=bool)), dtype=bool)
    dim = a.shape[-1] if a.ndim else 0
    for name, arr in (("q01", low), ("q99", high), ("mask", mask)):
        if arr.shape != (dim,):
            raise ValueError(f"action statistics {name!r} must have {dim} entries, got shape {arr.shape}")
    return np.where(mask, 0.5 * (a + 1.0) * (high - low) + low, a)


def gripper_to_unit(raw: np.ndarray) -> np.ndarray:
    """Clip the gripper column (index 6) of ``(B, 7)`` OpenVLA actions to [0 (closed), 1 (open)].

    The decoded gripper is a bin center in [-1, 1] (not un-normalized); OpenVLA trained it on
    ``0 = close, 1 = open`` and its evaluation thresholds ``2 g - 1`` at 0 (see the module
    docstring for the sources). Returns a new ``float64`` array; other columns are unchanged.
    """
    out = np.array(raw, dtype=np.float64, copy=True)
    out[..., GRIPPER_INDEX] = np.clip(out[..., GRIPPER_INDEX], GRIPPER_CLOSED, GRIPPER_OPEN)
    return out


def resolve_unnorm_key(norm_stats: Mapping[str, Any], unnorm_key: str | None) -> str:
    """Pick the statistics key: ``unnorm_key``, or the only key when it is ``None``.

    Raises:
        ValueError: ``None`` with several keys ("ambiguous", lists them); a key not in
            ``norm_stats`` (lists the valid keys); empty ``norm_stats``.

    Source: ``OpenVLAForActionPrediction._check_unnorm_key`` (github.com/openvla/openvla).
    """
    keys = sorted(norm_stats)
    if not keys:
        raise ValueError("the checkpoint has no norm_stats: cannot un-normalize actions")
    if unnorm_key is None:
        if len(keys) > 1:
            raise ValueError(f"unnorm_key is ambiguous: the checkpoint has statistics for {keys}; pass one of them")
        return keys[0]
    if unnorm_key not in norm_stats:
        raise ValueError(f"unknown unnorm_key {unnorm_key!r}; valid keys: {keys}")
    return unnorm_key


def load_norm_stats(model_dir: str | Path) -> dict[str, dict]:
    """Read OpenVLA dataset statistics of a checkpoint directory.

    ``dataset_statistics.json`` wins when present (OpenVLA's fine-tuning writes it and its
    evaluation loads it over the config's), else ``config.json``'s ``norm_stats``. Format:
    ``{key: {"action": {"q01": [7], "q99": [7], "mask": [7 bool], ...}, ...}}``.

    Returns:
        ``{key: action_stats}`` (the inner ``"action"`` dicts); ``{}`` when neither source exists.

    Raises:
        ValueError: an entry without an ``"action"`` dict with ``q01``/``q99`` of 7 entries (names
            the file and key).
    """
    model_dir = Path(model_dir)
    stats_file = model_dir / DATASET_STATISTICS_FILE
    config_file = model_dir / "config.json"
    raw: dict | None = None
    source = ""
    if stats_file.is_file():
        raw, source = json.loads(stats_file.read_text()), str(stats_file)
    elif config_file.is_file():
        raw = json.loads(config_file.read_text()).get(CONFIG_NORM_STATS_KEY)
        source = f"{config_file}[{CONFIG_NORM_STATS_KEY!r}]"
    if not raw:
        return {}
    out: dict[str, dict] = {}
    for key, entry in raw.items():
        action = entry.get("action") if isinstance(entry, Mapping) else None
        if not isinstance(action, Mapping) or "q01" not in action or "q99" not in action:
            raise ValueError(f"{source}: entry {key!r} has no 'action' statistics with q01/q99")
        for name in ("q01", "q99", "mask"):
            if name in action and len(action[name]) != ACTION_DIM:
                raise ValueError(f"{source}: {key!r} action {name} must have {ACTION_DIM} entries")
        out[key] = dict(action)
    return out


def _check_inputs(images: Any, instructions: Any) -> None:
    """Raise ``ValueError`` naming the field for anything but ``(B, H, W, 3) uint8`` + ``B`` strings."""
    if not isinstance(images, np.ndarray):
        raise ValueError(f"images: expected a numpy array, got {type(images).__name__}")
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"images: expected shape (B, H, W, 3), got {tuple(images.shape)}")
    if images.dtype != np.uint8:
        raise ValueError(f"images: expected dtype uint8, got {images.dtype}")
    if isinstance(instructions, str) or not isinstance(instructions, Sequence):
        raise ValueError(f"instructions: expected a list of strings, got {type(instructions).__name__}")
    if not all(isinstance(s, str) for s in instructions):
        raise ValueError("instructions: every entry must be a string")
    if len(instructions) != images.shape[0]:
        raise ValueError(f"instructions: got {len(instructions)} for {images.shape[0]} images (B must match)")


@dataclass(frozen=True)
class NotesGeneration:
    """One row's notes-mode generation (module docstring, Notes mode).

    Attributes:
        text: the generated text up to the action tokens, the forced prefix included (``<plan>...<act>`` and the
            act clause's text, e.g. ``<done>``); for a row without ``<act>``, all it generated.
        generation: the parsed text (:class:`~robot_rl.memory.notes_to_self.Generation`), or None when malformed.
        action_tokens: ``(7,) int64`` the action token ids after ``<act>``, or None when malformed.
        error: why the row is malformed, or None.
    """

    text: str
    generation: Generation | None
    action_tokens: np.ndarray | None
    error: str | None = None

    @property
    def note(self) -> str:
        """The row's note: :func:`~robot_rl.memory.notes_to_self.note_of` of its generation, ``""`` when malformed."""
        return "" if self.generation is None or self.error is not None else note_of(self.generation)


def _stop_after_action_tokens(prompt_len: int, marker_id: int, low: int, high: int, count: int):
    """A transformers ``StoppingCriteria``: a row is done once ``count`` ids in ``[low, high)`` (action tokens)
    follow its first ``marker_id`` (``<act>``) among the ids generated after ``prompt_len``.
    """
    import torch
    from transformers import StoppingCriteria

    class StopAfterActionTokens(StoppingCriteria):
        def __call__(self, input_ids, scores, **kwargs):
            new = input_ids[:, prompt_len:]
            after = torch.cumsum(new == marker_id, dim=1) > 0
            return ((new >= low) & (new < high) & after).sum(dim=1) >= count

    return StopAfterActionTokens()


# ----------------------------------------------------------------------------------------------
# The teacher


class OpenVLATeacher:
    """OpenVLA-style VLA teacher on a local transformers-native checkpoint (batched, greedy).

    Args:
        model_path: checkpoint directory (``AutoModelForImageTextToText`` + ``AutoProcessor``
            layout, plus ``norm_stats`` in ``config.json`` or ``dataset_statistics.json``).
        unnorm_key: default statistics key for requests that do not name one (``None``: the only
            key, if there is exactly one).
        control_period_steps: env steps one answer covers (``D``; a 5 Hz VLA on 20 Hz control: 4).
        device: torch device for the model (``"cpu"``, ``"cuda"``, ``"cuda:0"``...).
        torch_dtype: ``"auto"`` (the checkpoint's), ``"float32"``, ``"float16"`` or ``"bfloat16"``.
        notes: Notes-to-Self mode (module docstring): the request's ``scratchpads`` go into the prompt and
            answers carry ``notes``. Off: OpenVLA's plain 7-token protocol, scratchpads ignored.
        notes_max_new_tokens: notes mode: most tokens a row generates (text, ``<act>``, 7 action tokens).

    Attributes:
        spec: needs images, no state; ``model_id`` ``"openvla:<directory name>"``, ``unnorm_keys`` the
            sorted keys of the checkpoint's statistics, ``image_size`` the ``(H, W)`` the processor
            resizes images to (``None`` if it does not say), ``control_period_steps`` as given,
            ``writes_notes`` = ``notes``.
        unnorm_key: the default statistics key (``None``: the only one).
        vocab_size: the tokenizer's base vocabulary size used for de-tokenization.
        tag_ids: notes mode: the token id of each of :data:`NOTES_TAGS` (empty otherwise).

    Raises:
        FileNotFoundError: ``model_path`` is not a directory.
        ValueError: no ``norm_stats`` in the checkpoint, an unknown ``unnorm_key`` (lists the valid
            ones), a bad ``torch_dtype``, ``control_period_steps < 1``, ``notes_max_new_tokens < 8``, or
            notes mode with a tokenizer that splits one of the tags (names them).
    """

    def __init__(
        self,
        model_path: str | Path,
        unnorm_key: str | None = None,
        control_period_steps: int = 4,
        device: str = "cpu",
        torch_dtype: str = "auto",
        notes: bool = False,
        notes_max_new_tokens: int = DEFAULT_NOTES_MAX_NEW_TOKENS,
    ) -> None:
        import torch
        from transformers import AutoModelForImageTextToText, AutoProcessor

        path = Path(model_path)
        if not path.is_dir():
            raise FileNotFoundError(f"model_path {str(path)!r} is not a checkpoint directory")
        if int(control_period_steps) < 1:
            raise ValueError(f"control_period_steps must be >= 1, got {control_period_steps}")
        if torch_dtype != "auto" and torch_dtype not in TORCH_DTYPES:
            raise ValueError(f"torch_dtype must be 'auto' or one of {TORCH_DTYPES}, got {torch_dtype!r}")
        if int(notes_max_new_tokens) < ACTION_DIM + 1:
            raise ValueError(f"notes_max_new_tokens must be >= {ACTION_DIM + 1} (<act> and 7 action tokens), "
                             f"got {notes_max_new_tokens}")
        self.notes = bool(notes)
        self.notes_max_new_tokens = int(notes_max_new_tokens)

        self.norm_stats = load_norm_stats(path)
        if not self.norm_stats:
            raise ValueError(
                f"{path}: no norm_stats (neither {DATASET_STATISTICS_FILE} nor config.json[{CONFIG_NORM_STATS_KEY!r}])"
            )
        if unnorm_key is not None:
            resolve_unnorm_key(self.norm_stats, unnorm_key)
        self.unnorm_key = unnorm_key
        self.device = torch.device(device)

        dtype: Any = "auto" if torch_dtype == "auto" else getattr(torch, torch_dtype)
        self.processor = AutoProcessor.from_pretrained(path, local_files_only=True)
        self.model = AutoModelForImageTextToText.from_pretrained(path, dtype=dtype, local_files_only=True)
        self.model.to(self.device).eval()

        self.tokenizer = getattr(self.processor, "tokenizer", None)
        if self.tokenizer is None:
            raise ValueError(f"{path}: the processor has no tokenizer")
        self.tokenizer.padding_side = "left"  # batched generation continues every row at the right end
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.vocab_size = int(self.tokenizer.vocab_size)
        self.image_token: str | None = getattr(self.processor, "image_token", None)
        self.append_empty_token = self.vocab_size == LLAMA2_VOCAB_SIZE
        self.tag_ids: dict[str, int] = self._single_token_ids(NOTES_TAGS, path) if self.notes else {}
        self.spec = TeacherSpec(
            model_id=f"openvla:{path.resolve().name}", control_period_steps=int(control_period_steps), needs_image=True,
            needs_state=False, image_size=_processor_image_size(getattr(self.processor, "image_processor", None)),
            unnorm_keys=tuple(sorted(self.norm_stats)), writes_notes=self.notes,
        )

    def _single_token_ids(self, tags: Sequence[str], path: Path) -> dict[str, int]:
        """The id of each tag, which the tokenizer must encode as exactly one token (ValueError naming the others)."""
        ids, split = {}, []
        for tag in tags:
            enc = self.tokenizer(tag, add_special_tokens=False).input_ids
            if len(enc) == 1 and self.tokenizer.convert_ids_to_tokens(enc[0]) == tag:
                ids[tag] = int(enc[0])
            else:
                split.append(f"{tag} -> {self.tokenizer.convert_ids_to_tokens(enc)}")
        if split:
            raise ValueError(f"{path}: notes mode needs each of {list(tags)} to be one token of the tokenizer; "
                             f"it splits {'; '.join(split)}")
        return ids

    # -- model calls ---------------------------------------------------------------------------

    def build_prompt(self, instruction: str) -> str:
        """OpenVLA's prompt for ``instruction``, with the processor's image placeholder in front."""
        prompt = openvla_prompt(instruction)
        return f"{self.image_token}{prompt}" if self.image_token else prompt

    def build_notes_prompt(self, instruction: str, scratchpad: str | None) -> str:
        r"""Notes mode's prompt: :meth:`build_prompt` with ``"\n<plan>{scratchpad}</plan>"`` after the question
        (nothing added for an empty scratchpad), as Notes-to-Self builds it.
        """
        return prompt_with_scratchpad(self.build_prompt(instruction), scratchpad)

    def generate_action_tokens(self, images: np.ndarray, instructions: list[str]) -> np.ndarray:
        """Greedy action tokens for a batch: ``(B, H, W, 3) uint8`` + ``B`` strings -> ``(B, 7) int64``.

        One left-padded ``generate`` call for all rows (``max_new_tokens = min_new_tokens = 7``,
        ``do_sample=False``; the checkpoint's own generation config is not used).

        Raises:
            ValueError: bad ``images``/``instructions`` (names the field).
        """
        import torch
        from transformers import GenerationConfig

        _check_inputs(images, instructions)
        if images.shape[0] == 0:
            return np.zeros((0, ACTION_DIM), dtype=np.int64)
        texts = [self.build_prompt(s) for s in instructions]
        inputs = self.processor(images=list(images), text=texts, return_tensors="pt", padding=True)
        input_ids, attention_mask = inputs["input_ids"], inputs["attention_mask"]
        if self.append_empty_token:
            input_ids, attention_mask = _append_token(
                input_ids, attention_mask, LLAMA2_EMPTY_TOKEN_ID, self.tokenizer.pad_token_id
            )
        model_inputs = dict(inputs)
        model_inputs["input_ids"] = input_ids.to(self.device)
        model_inputs["attention_mask"] = attention_mask.to(self.device)
        model_inputs["pixel_values"] = inputs["pixel_values"].to(self.device, dtype=self.model.dtype)
        gen_config = GenerationConfig(
            max_new_tokens=ACTION_DIM,
            min_new_tokens=ACTION_DIM,
            do_sample=False,
            num_beams=1,
            pad_token_id=self.tokenizer.pad_token_id,
            eos_token_id=self.tokenizer.eos_token_id,
            bos_token_id=self.tokenizer.bos_token_id,
        )
        with torch.inference_mode():
            out = self.model.generate(**model_inputs, generation_config=gen_config)
        new = out[:, input_ids.shape[1] :]
        if new.shape != (images.shape[0], ACTION_DIM):
            expected = (images.shape[0], ACTION_DIM)
            raise RuntimeError(f"generate returned {tuple(new.shape)} new tokens, expected {expected}")
        return new.cpu().numpy().astype(np.int64)

    def generate_with_notes(self, images: np.ndarray, instructions: list[str],
                            scratchpads: Sequence[str] | None = None) -> list[NotesGeneration]:
        """Notes mode's generation for a batch (module docstring, Notes mode): one left-padded ``generate`` call.

        Args:
            images: ``(B, H, W, 3) uint8`` RGB.
            instructions: ``B`` instructions.
            scratchpads: ``B`` scratchpad texts (``""``: empty), or None (every row's is empty).

        Returns:
            ``B`` :class:`NotesGeneration`; a malformed row has ``error`` set (nothing raises for it).

        Raises:
            ValueError: bad ``images``/``instructions``/``scratchpads`` (names the field); not in notes mode.
        """
        import torch
        from transformers import GenerationConfig, StoppingCriteriaList

        if not self.notes:
            raise ValueError("generate_with_notes needs notes=True (Notes-to-Self mode)")
        _check_inputs(images, instructions)
        n = images.shape[0]
        pads = _check_scratchpads(scratchpads, n)
        if n == 0:
            return []
        texts = [self.build_notes_prompt(s, p) for s, p in zip(instructions, pads)]
        inputs = self.processor(images=list(images), text=texts, return_tensors="pt", padding=True)
        input_ids, attention_mask = inputs["input_ids"], inputs["attention_mask"]
        if self.append_empty_token:
            input_ids, attention_mask = _append_token(
                input_ids, attention_mask, LLAMA2_EMPTY_TOKEN_ID, self.tokenizer.pad_token_id
            )
        prefixes = [forced_prefix(p) for p in pads]
        prefix_ids = torch.tensor([[self.tag_ids[p]] for p in prefixes], dtype=input_ids.dtype)
        input_ids = torch.cat([input_ids, prefix_ids], dim=1)
        attention_mask = torch.cat([attention_mask, torch.ones((n, 1), dtype=attention_mask.dtype)], dim=1)
        model_inputs = dict(inputs)
        model_inputs["input_ids"] = input_ids.to(self.device)
        model_inputs["attention_mask"] = attention_mask.to(self.device)
        model_inputs["pixel_values"] = inputs["pixel_values"].to(self.device, dtype=self.model.dtype)
        prompt_len = input_ids.shape[1]
        stop = _stop_after_action_tokens(prompt_len, self.tag_ids[ACT], self.vocab_size - N_ACTION_BINS,
                                         self.vocab_size, ACTION_DIM)
        gen_config = GenerationConfig(
            max_new_tokens=self.notes_max_new_tokens,
            do_sample=False,
            num_beams=1,
            pad_token_id=self.tokenizer.pad_token_id,
            eos_token_id=self.tokenizer.eos_token_id,
            bos_token_id=self.tokenizer.bos_token_id,
        )
        with torch.inference_mode():
            out = self.model.generate(**model_inputs, generation_config=gen_config,
                                      stopping_criteria=StoppingCriteriaList([stop]))
        new = out[:, prompt_len:].cpu().numpy().astype(np.int64)
        return [self._parse_notes_row(prefixes[i], new[i]) for i in range(n)]

    def _decode_text(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode([int(i) for i in ids], skip_special_tokens=False,
                                     clean_up_tokenization_spaces=False)

    def _parse_notes_row(self, prefix: str, ids: np.ndarray) -> NotesGeneration:
        """One row's generated ids (after its forced ``prefix``) -> :class:`NotesGeneration` (never raises)."""
        ends = {self.tokenizer.eos_token_id, self.tokenizer.pad_token_id} - {None}
        ids = [int(i) for i in ids]
        end = next((j for j, t in enumerate(ids) if t in ends), len(ids))  # EOS, or the pads after a stopped row
        ids = ids[:end]
        marker = self.tag_ids[ACT]
        if marker not in ids:
            text = prefix + self._decode_text(ids)
            why = "EOS" if end < self.notes_max_new_tokens else f"the budget of {self.notes_max_new_tokens} tokens"
            return NotesGeneration(text, None, None, f"no {ACT} before {why}")
        k = ids.index(marker)
        clause = ids[k + 1:]
        low, high = self.vocab_size - N_ACTION_BINS, self.vocab_size
        first = next((j for j, t in enumerate(clause) if low <= t < high), len(clause))
        text = prefix + self._decode_text(ids[:k]) + ACT + self._decode_text(clause[:first])
        try:
            gen = parse_generation(text)
        except MalformedGeneration as exc:
            return NotesGeneration(text, None, None, str(exc))
        act = clause[first:first + ACTION_DIM]
        if len(act) < ACTION_DIM:
            return NotesGeneration(text, None, None,
                                   f"{len(act)} action tokens after {ACT}, expected {ACTION_DIM}")
        if not all(low <= t < high for t in act):
            return NotesGeneration(text, None, None,
                                   f"a text token among the {ACTION_DIM} action tokens after {ACT}: {act}")
        return NotesGeneration(text, gen, np.asarray(act, dtype=np.int64))

    def predict_raw(self, images: np.ndarray, instructions: list[str], unnorm_key: str | None = None) -> np.ndarray:
        """Actions in OpenVLA's convention for a batch.

        Args:
            images: ``(B, H, W, 3) uint8`` RGB.
            instructions: ``B`` instructions.
            unnorm_key: statistics key (``None``: the constructor's default, then the only key).

        Returns:
            ``(B, 7) float64``: ``[dx, dy, dz]`` m, ``[droll, dpitch, dyaw]`` rad (the dataset's
            units after un-normalization), gripper in [0 (closed), 1 (open)].

        Raises:
            ValueError: bad inputs (names the field), ambiguous or unknown ``unnorm_key``.
        """
        key = resolve_unnorm_key(self.norm_stats, unnorm_key if unnorm_key is not None else self.unnorm_key)
        _check_inputs(images, instructions)
        tokens = self.generate_action_tokens(images, instructions)
        return self.decode(tokens, key)

    def decode(self, token_ids: np.ndarray, unnorm_key: str) -> np.ndarray:
        """``(B, 7)`` action token ids -> ``(B, 7) float64`` OpenVLA-convention actions for ``unnorm_key``."""
        key = resolve_unnorm_key(self.norm_stats, unnorm_key)
        a_norm = decode_action_tokens(np.asarray(token_ids).reshape(-1, ACTION_DIM), self.vocab_size)
        return gripper_to_unit(unnormalize(a_norm, self.norm_stats[key]))

    def check_request(self, request: TeacherRequest) -> None:
        """Validate ``request`` without running the model (the :class:`~robot_rl.teachers.base.Teacher` contract).

        Raises:
            TeacherRequestError: ``images`` missing or malformed, ``instructions`` not matching,
                ``unnorm_key`` ambiguous or unknown; in notes mode, ``scratchpads`` not ``B`` strings.
        """
        self._unnorm_key(request)

    def _unnorm_key(self, request: TeacherRequest) -> str:
        """:meth:`check_request`, returning the statistics key the request will use."""
        self.spec.check(request)
        try:
            _check_inputs(request.images, list(request.instructions))
        except ValueError as exc:
            field, _, msg = str(exc).partition(": ")
            raise TeacherRequestError(field, msg) from None
        if self.notes:
            try:
                _check_scratchpads(request.scratchpads, len(request.instructions))
            except ValueError as exc:
                raise TeacherRequestError("scratchpads", str(exc).partition(": ")[2]) from None
        key = request.unnorm_key if request.unnorm_key is not None else self.unnorm_key
        try:
            return resolve_unnorm_key(self.norm_stats, key)
        except ValueError as exc:
            raise TeacherRequestError("unnorm_key", str(exc)) from None

    def act(self, request: TeacherRequest) -> TeacherResponse:
        """Answer a batch in the env convention (:mod:`robot_rl.teachers.base`).

        ``extras["raw_actions"]`` holds the ``(B, 7)`` OpenVLA-convention actions. Uses
        ``request.unnorm_key`` (``None``: the constructor's default). In notes mode (module docstring) the
        rows' ``scratchpads`` go into their prompts, ``notes`` holds each row's note (``""``: none), a malformed
        generation's row is NaN, and ``extras["generations"]`` / ``extras["generation_errors"]`` hold each row's
        text and error (None when well formed).

        Raises:
            TeacherRequestError: ``request.images`` is ``None`` or malformed, or the ``unnorm_key`` is
                ambiguous or unknown (:meth:`check_request`).
        """
        t0 = time.perf_counter()
        key = self._unnorm_key(request)
        if not self.notes:
            raw = self.decode(self.generate_action_tokens(request.images, list(request.instructions)), key)
            return TeacherResponse(actions=openvla_to_env(raw), latency_s=time.perf_counter() - t0,
                                   model_id=self.spec.model_id, extras={"raw_actions": raw})
        rows = self.generate_with_notes(request.images, list(request.instructions), request.scratchpads)
        tokens = np.stack([r.action_tokens if r.action_tokens is not None
                           else np.full(ACTION_DIM, self.vocab_size - 1, np.int64) for r in rows]) if rows else (
            np.zeros((0, ACTION_DIM), np.int64))
        raw = self.decode(tokens, key)
        raw[[r.action_tokens is None for r in rows]] = np.nan  # malformed: no guidance for that row
        return TeacherResponse(
            actions=openvla_to_env(raw), latency_s=time.perf_counter() - t0, model_id=self.spec.model_id,
            notes=[r.note for r in rows],
            extras={"raw_actions": raw, "generations": [r.text for r in rows],
                    "generation_errors": [r.error for r in rows]},
        )


def _check_scratchpads(scratchpads: Any, n: int) -> list[str]:
    """``n`` scratchpad texts (None: ``n`` empty ones); ValueError ``"scratchpads: ..."`` otherwise."""
    if scratchpads is None:
        return [""] * n
    if isinstance(scratchpads, str) or not isinstance(scratchpads, Sequence):
        raise ValueError(f"scratchpads: expected a list of strings, got {type(scratchpads).__name__}")
    if len(scratchpads) != n:
        raise ValueError(f"scratchpads: got {len(scratchpads)} for {n} rows (B must match)")
    bad = [i for i, p in enumerate(scratchpads) if not isinstance(p, str)]
    if bad:
        raise ValueError(f"scratchpads: items {bad} are not strings")
    return list(scratchpads)


def _append_token(input_ids, attention_mask, token_id: int, pad_id: int):
    """Append ``token_id`` to each left-padded row that does not already end with it.

    Rows that already end with it are shifted right by one pad (mask 0) so the batch stays
    rectangular and every row still ends at the last column. Returns new ``(B, L+1)`` tensors, or
    the inputs unchanged when every row already ends with ``token_id``.
    """
    import torch

    needs = input_ids[:, -1] != token_id
    if not bool(needs.any()):
        return input_ids, attention_mask
    b = input_ids.shape[0]
    tok = torch.full((b, 1), token_id, dtype=input_ids.dtype)
    pad = torch.full((b, 1), pad_id, dtype=input_ids.dtype)
    one = torch.ones((b, 1), dtype=attention_mask.dtype)
    zero = torch.zeros((b, 1), dtype=attention_mask.dtype)
    sel = needs[:, None]
    new_ids = torch.where(sel, torch.cat([input_ids, tok], 1), torch.cat([pad, input_ids], 1))
    new_mask = torch.where(sel, torch.cat([attention_mask, one], 1), torch.cat([zero, attention_mask], 1))
    return new_ids, new_mask


def _processor_image_size(image_processor: Any) -> tuple[int, int] | None:
    """``(H, W)`` an image processor outputs: its crop size when it crops, else a fixed resize size.

    Reads ``height``/``width`` from dicts or transformers' ``SizeDict``; ``None`` when the output
    size is not fixed (e.g. a ``shortest_edge`` resize without a crop).
    """

    def _hw(size: Any) -> tuple[int, int] | None:
        if isinstance(size, Mapping):
            h, w = size.get("height"), size.get("width")
        else:
            h, w = getattr(size, "height", None), getattr(size, "width", None)
        return (int(h), int(w)) if h is not None and w is not None else None

    if image_processor is None:
        return None
    if getattr(image_processor, "do_center_crop", False):
        crop = _hw(getattr(image_processor, "crop_size", None))
        if crop is not None:
            return crop
    return _hw(getattr(image_processor, "size", None))


__all__ = [
    "BIN_CENTERS",
    "LLAMA2_EMPTY_TOKEN_ID",
    "DEFAULT_NOTES_MAX_NEW_TOKENS",
    "LLAMA2_VOCAB_SIZE",
    "NOTES_TAGS",
    "N_ACTION_BINS",
    "NotesGeneration",
    "OpenVLATeacher",
    "decode_action_tokens",
    "gripper_to_unit",
    "load_norm_stats",
    "resolve_unnorm_key",
    "unnormalize",
]
