"""OpenVLA teacher backend on a tiny locally built checkpoint (random weights; no downloads).

Pins: the whole path (image + instruction -> processor -> generate -> decode -> unnormalize ->
env action), the decoding against hand-computed numbers with *forced* action tokens, batched ==
per-row results under left padding, and the error cases.
"""

from __future__ import annotations

import contextlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from robot_rl.teacher_protocol import validate_teacher_actions
from robot_rl.teachers.base import Teacher, TeacherRequest, TeacherRequestError
from robot_rl.teachers.wire import openvla_to_env

pytest.importorskip("torch")
pytest.importorskip("transformers")

# Imported only once the optional dependencies are known present.
import torch

from robot_rl.teachers.openvla import (
    BIN_CENTERS,
    LLAMA2_EMPTY_TOKEN_ID,
    OpenVLATeacher,
    _append_token,
    decode_action_tokens,
    gripper_to_unit,
    load_norm_stats,
    resolve_unnorm_key,
    unnormalize,
)
from robot_rl.testing.tiny_vla import (
    N_ACTION_BINS,
    TINY_NORM_STATS,
    save_tiny_vla,
    tiny_action_token_id,
)

#: Bin k's center, by hand: edges -1 + 2i/255, center of bin k = -1 + (2k + 1)/255.
STEP = 2.0 / 255.0
BRIDGE = TINY_NORM_STATS["bridge_orig"]["action"]
FRACTAL = TINY_NORM_STATS["fractal20220817_data"]["action"]
INSTRUCTIONS = [
    "push the cube to the goal",
    "pick the red cube and place it on the green goal region",
    "lift the peg upright",
    "stack the cube",
    "insert the peg into the hole from the side with a zebra",  # unknown words -> <unk>
    "poke",
]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    return save_tiny_vla(tmp_path_factory.mktemp("tiny_vla") / "tiny", seed=0)


@pytest.fixture(scope="module")
def teacher(ckpt) -> OpenVLATeacher:
    return OpenVLATeacher(ckpt, control_period_steps=4)


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, size=(len(INSTRUCTIONS), 224, 224, 3), dtype=np.uint8)


@contextlib.contextmanager
def forced_tokens(teacher: OpenVLATeacher, tokens: np.ndarray):
    """Make the model's greedy choice at generation step ``t`` of row ``b`` be ``tokens[b, t]``.

    A forward hook on the LM head replaces its logits by a one-hot-like score on the chosen id
    (one call per generated token: the prefill, then 6 cached steps).
    """
    tokens = torch.as_tensor(np.asarray(tokens), dtype=torch.long)
    step = {"t": 0}

    def hook(_module, _inputs, logits):
        t = step["t"]
        step["t"] += 1
        forced = torch.full_like(logits, -1e4)
        rows = torch.arange(logits.shape[0])
        forced[rows, :, tokens[rows, t]] = 1e4
        return forced

    handle = teacher.model.get_output_embeddings().register_forward_hook(hook)
    try:
        yield step
    finally:
        handle.remove()


# ----------------------------------------------------------------------------------------------
# Pure functions, hand numbers


def test_bin_centers_by_hand():
    assert BIN_CENTERS.shape == (255,)
    assert BIN_CENTERS[0] == pytest.approx(-1 + 1 / 255, abs=1e-15)
    assert BIN_CENTERS[127] == pytest.approx(0.0, abs=1e-15)  # -1 + 255/255
    assert BIN_CENTERS[254] == pytest.approx(1 - 1 / 255, abs=1e-15)
    np.testing.assert_allclose(np.diff(BIN_CENTERS), STEP, rtol=0, atol=1e-15)


def test_decode_action_tokens_hand_numbers_and_clipping():
    v = 1000
    ids = np.array(
        [
            [v - 1, v - 2, v - 128, v - 255, v - 256, v - 257, 3],  # bins 0, 1, 127, 254, 255->254, 256->254, far->254
            [v, v + 5, v - 1 - 200, v - 1 - 63, v - 1, v - 1, v - 1],  # >= vocab -> bin 0
        ]
    )
    expected = np.array(
        [
            [-1 + 1 / 255, -1 + 3 / 255, 0.0, 1 - 1 / 255, 1 - 1 / 255, 1 - 1 / 255, 1 - 1 / 255],
            [-1 + 1 / 255, -1 + 1 / 255, -1 + 401 / 255, -1 + 127 / 255, -1 + 1 / 255, -1 + 1 / 255, -1 + 1 / 255],
        ]
    )
    out = decode_action_tokens(ids, v)
    assert out.shape == (2, 7) and out.dtype == np.float64
    np.testing.assert_allclose(out, expected, rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="integers"):
        decode_action_tokens(ids.astype(float), v)
    with pytest.raises(ValueError, match="vocab_size"):
        decode_action_tokens(ids, 100)


def test_unnormalize_hand_numbers_and_mask():
    stats = {"q01": [-1.0, 0.0, 2.0, -0.5], "q99": [1.0, 4.0, 3.0, 0.5], "mask": [True, True, True, False]}
    a = np.array([[-1.0, 0.0, 1.0, -0.75], [0.5, -0.5, 0.0, 0.25]])
    expected = np.array(
        [
            [-1.0, 2.0, 3.0, -0.75],  # a=-1 -> q01, a=0 -> midpoint, a=1 -> q99, masked: passthrough
            [0.5, 1.0, 2.5, 0.25],
        ]
    )
    np.testing.assert_allclose(unnormalize(a, stats), expected, rtol=0, atol=1e-15)
    # No mask: all dimensions are un-normalized (OpenVLA's default).
    no_mask = {"q01": stats["q01"], "q99": stats["q99"]}
    assert unnormalize(a, no_mask)[0, 3] == pytest.approx(0.5 * (-0.75 + 1) * 1.0 - 0.5)
    with pytest.raises(ValueError, match="q99"):
        unnormalize(a, {"q01": stats["q01"]})
    with pytest.raises(ValueError, match="entries"):
        unnormalize(a, {"q01": [0.0] * 3, "q99": [1.0] * 3})


def test_gripper_to_unit_clips_only_the_gripper():
    raw = np.array([[-2.0, 3.0, 0, 0, 0, 0, -1 + 1 / 255], [0, 0, 0, 0, 0, 0, 1 - 1 / 255], [0, 0, 0, 0, 0, 0, 0.5]])
    out = gripper_to_unit(raw)
    np.testing.assert_array_equal(out[:, :6], raw[:, :6])
    np.testing.assert_allclose(out[:, 6], [0.0, 1 - 1 / 255, 0.5])
    assert raw[0, 6] < 0  # input untouched


def test_resolve_unnorm_key():
    two = {"a": {}, "b": {}}
    with pytest.raises(ValueError, match=r"ambiguous.*\['a', 'b'\]"):
        resolve_unnorm_key(two, None)
    with pytest.raises(ValueError, match=r"unknown unnorm_key 'c'.*\['a', 'b'\]"):
        resolve_unnorm_key(two, "c")
    assert resolve_unnorm_key(two, "b") == "b"
    assert resolve_unnorm_key({"only": {}}, None) == "only"
    with pytest.raises(ValueError, match="no norm_stats"):
        resolve_unnorm_key({}, None)


def test_append_empty_token_keeps_rows_right_aligned():
    ids = torch.tensor([[0, 1, 5], [1, 5, LLAMA2_EMPTY_TOKEN_ID]])
    mask = torch.tensor([[0, 1, 1], [1, 1, 1]])
    new_ids, new_mask = _append_token(ids, mask, LLAMA2_EMPTY_TOKEN_ID, pad_id=0)
    assert new_ids.tolist() == [[0, 1, 5, LLAMA2_EMPTY_TOKEN_ID], [0, 1, 5, LLAMA2_EMPTY_TOKEN_ID]]
    assert new_mask.tolist() == [[0, 1, 1, 1], [0, 1, 1, 1]]
    same_ids, same_mask = _append_token(new_ids, new_mask, LLAMA2_EMPTY_TOKEN_ID, pad_id=0)
    assert same_ids is new_ids and same_mask is new_mask


# ----------------------------------------------------------------------------------------------
# The teacher on the tiny checkpoint


def test_checkpoint_and_metadata(ckpt, teacher):
    assert isinstance(teacher, Teacher)
    spec = teacher.spec
    assert spec.needs_image is True and spec.needs_state is False and spec.control_period_steps == 4
    assert spec.model_id == "openvla:tiny" and spec.state_dim is None and spec.writes_notes is False
    assert spec.unnorm_keys == ("bridge_orig", "fractal20220817_data")
    assert spec.image_size == (224, 224)
    assert teacher.image_token == "<image>"
    # Not Llama-2's vocabulary: no token 29871 appended; action tokens are the last 256 ids.
    assert teacher.vocab_size == len(teacher.tokenizer) and teacher.append_empty_token is False
    assert teacher.tokenizer.convert_ids_to_tokens(teacher.vocab_size - 1) == "<act_000>"
    assert teacher.tokenizer.convert_ids_to_tokens(teacher.vocab_size - N_ACTION_BINS) == "<act_255>"
    config = json.loads((ckpt / "config.json").read_text())
    assert tuple(sorted(config["norm_stats"])) == teacher.spec.unnorm_keys
    expected_prompt = "<image>In: What action should the robot take to push the cube?\nOut:"
    assert teacher.build_prompt("Push the Cube") == expected_prompt


def test_whole_path_runs(teacher, images):
    raw = teacher.predict_raw(images, INSTRUCTIONS, unnorm_key="bridge_orig")
    assert raw.shape == (len(INSTRUCTIONS), 7) and raw.dtype == np.float64
    assert np.isfinite(raw).all()
    assert ((raw[:, 6] >= 0.0) & (raw[:, 6] <= 1.0)).all()
    low, high = np.array(BRIDGE["q01"][:6]), np.array(BRIDGE["q99"][:6])
    assert ((raw[:, :6] > low) & (raw[:, :6] < high)).all()  # bin centers stay inside (q01, q99)

    response = teacher.act(TeacherRequest(instructions=INSTRUCTIONS, images=images, unnorm_key="bridge_orig"))
    assert response.actions.shape == (len(INSTRUCTIONS), 7) and response.actions.dtype == np.float32
    assert np.isfinite(response.actions).all()
    assert response.model_id == "openvla:tiny" and response.latency_s.shape == (len(INSTRUCTIONS),)
    assert (response.latency_s > 0).all() and response.notes is None
    np.testing.assert_array_equal(response.extras["raw_actions"], raw)  # greedy: deterministic
    np.testing.assert_allclose(response.actions, openvla_to_env(raw))
    assert ((response.actions[:, 6] >= -1) & (response.actions[:, 6] <= 1)).all()


def test_other_image_sizes_are_resized(teacher):
    imgs = np.random.default_rng(1).integers(0, 256, size=(2, 128, 160, 3), dtype=np.uint8)
    raw = teacher.predict_raw(imgs, INSTRUCTIONS[:2], unnorm_key="fractal20220817_data")
    assert raw.shape == (2, 7) and np.isfinite(raw).all()


def test_forced_tokens_decode_to_hand_computed_actions(teacher, images):
    v = teacher.vocab_size
    bins = np.array(
        [
            [0, 254, 127, 1, 200, 63, 0],  # gripper bin 0 -> -1 + 1/255 -> clipped to 0 (closed)
            [254, 0, 127, 254, 0, 191, 254],  # gripper bin 254 -> 1 - 1/255 (open)
        ]
    )
    tokens = np.vectorize(lambda k: tiny_action_token_id(v, int(k)))(bins)
    assert tokens[0, 0] == v - 1 and tokens[0, 1] == v - 255
    with forced_tokens(teacher, tokens) as step:
        got_tokens = teacher.generate_action_tokens(images[:2], INSTRUCTIONS[:2])
    assert step["t"] == 7  # exactly 7 generation steps
    np.testing.assert_array_equal(got_tokens, tokens)

    with forced_tokens(teacher, tokens):
        raw = teacher.predict_raw(images[:2], INSTRUCTIONS[:2], unnorm_key="bridge_orig")
    q01, q99 = BRIDGE["q01"], BRIDGE["q99"]
    # a = 0.5 (n + 1)(q99 - q01) + q01 with n = -1 + (2k + 1)/255, i.e. a = q01 + (2k + 1)/510 (q99 - q01).
    expected = np.array(
        [
            [
                -0.03 + 1 / 510 * 0.06,  # bin 0
                -0.04 + 509 / 510 * 0.08,  # bin 254
                -0.05 + 255 / 510 * 0.10,  # bin 127: the midpoint 0.0
                -0.10 + 3 / 510 * 0.20,  # bin 1
                -0.12 + 401 / 510 * 0.24,  # bin 200
                -0.20 + 127 / 510 * 0.40,  # bin 63
                0.0,  # gripper: not un-normalized, -1 + 1/255 clipped to 0
            ],
            [
                -0.03 + 509 / 510 * 0.06,
                -0.04 + 1 / 510 * 0.08,
                -0.05 + 255 / 510 * 0.10,
                -0.10 + 509 / 510 * 0.20,
                -0.12 + 1 / 510 * 0.24,
                -0.20 + 383 / 510 * 0.40,
                1 - 1 / 255,  # gripper bin 254, passthrough
            ],
        ]
    )
    assert [q01[i] for i in range(6)] == [-0.03, -0.04, -0.05, -0.10, -0.12, -0.20]
    assert [q99[i] - q01[i] for i in range(6)] == pytest.approx([0.06, 0.08, 0.10, 0.20, 0.24, 0.40])
    np.testing.assert_allclose(raw, expected, rtol=0, atol=1e-12)
    assert raw[0, 2] == pytest.approx(0.0, abs=1e-15)

    # Same tokens, other statistics; then the env convention: pos / 0.1 m, rot / (-0.1 rad), 2 g - 1.
    with forced_tokens(teacher, tokens):
        response = teacher.act(
            TeacherRequest(instructions=INSTRUCTIONS[:2], images=images[:2], unnorm_key="fractal20220817_data")
        )
    raw_f = response.extras["raw_actions"]
    assert raw_f[0, 0] == pytest.approx(-0.20 + 1 / 510 * 0.38, abs=1e-12)
    assert raw_f[1, 5] == pytest.approx(-0.40 + 383 / 510 * 0.85, abs=1e-12)
    assert response.actions[0, 0] == pytest.approx(raw_f[0, 0] / 0.1, rel=1e-6)
    assert response.actions[1, 5] == pytest.approx(raw_f[1, 5] / -0.1, rel=1e-6)
    assert response.actions[0, 6] == pytest.approx(-1.0)  # closed
    assert response.actions[1, 6] == pytest.approx(2 * (1 - 1 / 255) - 1, rel=1e-6)  # open


def test_forced_non_action_tokens_clip_like_openvla(teacher, images):
    v = teacher.vocab_size
    tokens = np.array([[5, v - N_ACTION_BINS, 0, v - 1, v - 1, v - 1, 5]])  # text ids clip to bin 254
    with forced_tokens(teacher, tokens):
        raw = teacher.predict_raw(images[:1], INSTRUCTIONS[:1], unnorm_key="bridge_orig")
    assert raw[0, 0] == pytest.approx(-0.03 + 509 / 510 * 0.06, abs=1e-12)
    assert raw[0, 1] == pytest.approx(-0.04 + 509 / 510 * 0.08, abs=1e-12)
    assert raw[0, 6] == pytest.approx(1 - 1 / 255, abs=1e-12)


def test_batched_equals_per_row(teacher, images):
    lengths = {len(teacher.tokenizer(teacher.build_prompt(s)).input_ids) for s in INSTRUCTIONS}
    assert len(lengths) > 3  # rows really are padded differently
    batched = teacher.generate_action_tokens(images, INSTRUCTIONS)
    rows = np.concatenate(
        [teacher.generate_action_tokens(images[i : i + 1], INSTRUCTIONS[i : i + 1]) for i in range(len(images))]
    )
    np.testing.assert_array_equal(batched, rows)
    assert len({tuple(r) for r in batched}) > 1  # the random model does depend on its input
    raw_b = teacher.predict_raw(images, INSTRUCTIONS, unnorm_key="bridge_orig")
    raw_r = np.concatenate(
        [teacher.predict_raw(images[i : i + 1], INSTRUCTIONS[i : i + 1], "bridge_orig") for i in range(len(images))]
    )
    np.testing.assert_array_equal(raw_b, raw_r)


def test_llama2_vocabulary_appends_empty_token(tmp_path_factory, images):
    """With Llama-2's vocabulary size (32000) every prompt reaches the model ending in 29871."""
    path = save_tiny_vla(tmp_path_factory.mktemp("tiny_vla_32k") / "llama2", vocab_size=32000)
    llama = OpenVLATeacher(path)
    assert llama.vocab_size == 32000 and llama.append_empty_token is True
    seen = []
    handle = llama.model.register_forward_pre_hook(
        lambda _m, _a, kw: seen.append(kw.get("input_ids")), with_kwargs=True
    )
    try:
        batched = llama.generate_action_tokens(images[:3], INSTRUCTIONS[:3])
    finally:
        handle.remove()
    prompt_ids = seen[0]  # the prefill call: the whole left-padded prompt
    assert (prompt_ids[:, -1] == LLAMA2_EMPTY_TOKEN_ID).all()
    assert (prompt_ids[:, -2] == llama.tokenizer.convert_tokens_to_ids(":")).all()  # "... Out:" then 29871
    rows = np.concatenate([llama.generate_action_tokens(images[i : i + 1], INSTRUCTIONS[i : i + 1]) for i in range(3)])
    np.testing.assert_array_equal(batched, rows)

    # Notes mode: "Out:", 29871, then the forced prefix (as "Out: <plan>" tokenizes with Llama-2's vocabulary).
    notes = OpenVLATeacher(path, notes=True, notes_max_new_tokens=16)
    seen.clear()
    handle = notes.model.register_forward_pre_hook(lambda _m, _a, kw: seen.append(kw.get("input_ids")),
                                                   with_kwargs=True)
    forced = [_ids(notes, "pick", "</think>", "<act>", *BINS[0].tolist()), _ids(notes, "</s>")]
    try:
        with forced_tokens(notes, _padded(notes, forced)):
            rows = notes.generate_with_notes(images[:2], INSTRUCTIONS[:2], ["plan: pick", ""])
    finally:
        handle.remove()
    assert seen[0][:, -2].tolist() == [LLAMA2_EMPTY_TOKEN_ID] * 2
    assert seen[0][:, -1].tolist() == [notes.tag_ids["<think>"], notes.tag_ids["<plan>"]]
    assert rows[0].error is None and rows[0].text == "<think>pick </think><act>" and "no <act>" in rows[1].error
    np.testing.assert_array_equal(rows[0].action_tokens, [tiny_action_token_id(32000, int(k)) for k in BINS[0]])


def test_empty_batch(teacher):
    raw = teacher.predict_raw(np.zeros((0, 224, 224, 3), np.uint8), [], unnorm_key="bridge_orig")
    assert raw.shape == (0, 7)


# ----------------------------------------------------------------------------------------------
# Errors


def test_unnorm_key_errors(ckpt, teacher, images):
    with pytest.raises(ValueError, match=r"ambiguous.*bridge_orig.*fractal20220817_data"):
        teacher.predict_raw(images[:1], INSTRUCTIONS[:1])
    with pytest.raises(ValueError, match=r"ambiguous"):
        teacher.act(TeacherRequest(instructions=INSTRUCTIONS[:1], images=images[:1]))
    with pytest.raises(ValueError, match=r"unknown unnorm_key 'nope'.*bridge_orig.*fractal20220817_data"):
        teacher.predict_raw(images[:1], INSTRUCTIONS[:1], unnorm_key="nope")
    with pytest.raises(ValueError, match=r"unknown unnorm_key 'nope'"):
        OpenVLATeacher(ckpt, unnorm_key="nope")


def test_default_unnorm_key_and_single_key(ckpt, tmp_path, images):
    default = OpenVLATeacher(ckpt, unnorm_key="fractal20220817_data")
    tokens = np.full((1, 7), tiny_action_token_id(default.vocab_size, 0))
    with forced_tokens(default, tokens):
        raw = default.act(TeacherRequest(instructions=INSTRUCTIONS[:1], images=images[:1])).extras["raw_actions"]
    assert raw[0, 0] == pytest.approx(FRACTAL["q01"][0] + 1 / 510 * 0.38, abs=1e-12)
    with forced_tokens(default, tokens):  # the request's key overrides the default
        raw = default.predict_raw(images[:1], INSTRUCTIONS[:1], unnorm_key="bridge_orig")
    assert raw[0, 0] == pytest.approx(-0.03 + 1 / 510 * 0.06, abs=1e-12)

    # dataset_statistics.json (one key) wins over config.json's norm_stats (two keys).
    one = tmp_path / "one"
    shutil.copytree(ckpt, one)
    (one / "dataset_statistics.json").write_text(json.dumps({"only": TINY_NORM_STATS["bridge_orig"]}))
    assert list(load_norm_stats(one)) == ["only"]
    single = OpenVLATeacher(one)
    assert single.spec.unnorm_keys == ("only",)
    assert single.predict_raw(images[:1], INSTRUCTIONS[:1]).shape == (1, 7)

    # Neither source: no statistics at all.
    bare = tmp_path / "bare"
    shutil.copytree(ckpt, bare)
    (bare / "dataset_statistics.json").unlink()
    config = json.loads((bare / "config.json").read_text())
    del config["norm_stats"]
    (bare / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="no norm_stats"):
        OpenVLATeacher(bare)

    # Malformed statistics name the file and key.
    (bare / "dataset_statistics.json").write_text(json.dumps({"k": {"action": {"q01": [0.0] * 6, "q99": [1.0] * 6}}}))
    with pytest.raises(ValueError, match=r"dataset_statistics.json.*'k'"):
        load_norm_stats(bare)


def test_input_errors(teacher, images):
    ins = INSTRUCTIONS[:2]
    with pytest.raises(ValueError, match="images.*uint8"):
        teacher.predict_raw(images[:2].astype(np.float32), ins, "bridge_orig")
    with pytest.raises(ValueError, match=r"images.*\(B, H, W, 3\)"):
        teacher.predict_raw(images[0], ins[:1], "bridge_orig")
    with pytest.raises(ValueError, match=r"images.*\(B, H, W, 3\)"):
        teacher.predict_raw(np.zeros((2, 8, 8, 4), np.uint8), ins, "bridge_orig")
    with pytest.raises(ValueError, match="images.*numpy"):
        teacher.predict_raw(images[:2].tolist(), ins, "bridge_orig")
    with pytest.raises(ValueError, match="instructions.*3.*2"):
        teacher.predict_raw(images[:2], INSTRUCTIONS[:3], "bridge_orig")
    with pytest.raises(ValueError, match="instructions"):
        teacher.predict_raw(images[:1], "push the cube", "bridge_orig")
    with pytest.raises(ValueError, match="images.*needs images"):
        teacher.act(TeacherRequest(instructions=ins, images=None, unnorm_key="bridge_orig"))


def test_constructor_errors(ckpt, tmp_path):
    with pytest.raises(FileNotFoundError):
        OpenVLATeacher(tmp_path / "missing")
    with pytest.raises(ValueError, match="torch_dtype"):
        OpenVLATeacher(ckpt, torch_dtype="float8")
    with pytest.raises(ValueError, match="control_period_steps"):
        OpenVLATeacher(ckpt, control_period_steps=0)


def test_batch_of_32(teacher):
    """A full batch goes through in one call (its speed is benchmarks/teacher_server.py's job, not a test's)."""
    imgs = np.random.default_rng(2).integers(0, 256, size=(32, 224, 224, 3), dtype=np.uint8)
    request = TeacherRequest(instructions=(INSTRUCTIONS * 6)[:32], images=imgs, unnorm_key="bridge_orig")
    response = teacher.act(request)
    assert response.actions.shape == (32, 7) and np.isfinite(response.actions).all()


# ----------------------------------------------------------------------------------------------
# Notes mode (Notes-to-Self): scratchpad in the prompt, forced prefix, text parsed before the action tokens


@pytest.fixture(scope="module")
def notes_teacher(ckpt) -> OpenVLATeacher:
    return OpenVLATeacher(ckpt, control_period_steps=4, notes=True, notes_max_new_tokens=48)


def _ids(teacher: OpenVLATeacher, *pieces) -> list[int]:
    """Token ids of ``pieces``: a token of the tiny vocabulary (str), or an action bin (int)."""
    out = []
    for p in pieces:
        if isinstance(p, int):
            out.append(tiny_action_token_id(teacher.vocab_size, p))
        else:
            tid = teacher.tokenizer.convert_tokens_to_ids(p)
            assert tid != teacher.tokenizer.unk_token_id, p
            out.append(tid)
    return out


def _padded(teacher: OpenVLATeacher, rows: list[list[int]]) -> np.ndarray:
    """Rows of forced ids as one ``(B, T)`` array (pads after a shorter row: generate pads a finished row anyway)."""
    width = max(len(r) for r in rows)
    return np.array([r + [teacher.tokenizer.pad_token_id] * (width - len(r)) for r in rows])


def _by_hand(bins, stats) -> np.ndarray:
    """OpenVLA-convention actions of action bins: ``q01 + (2k + 1) / 510 (q99 - q01)``, gripper clipped bin center."""
    k = np.asarray(bins, dtype=np.float64)
    q01, q99 = np.asarray(stats["q01"]), np.asarray(stats["q99"])
    out = q01 + (2 * k + 1) / 510 * (q99 - q01)
    out[..., 6] = np.clip(-1 + (2 * k[..., 6] + 1) / 255, 0.0, 1.0)
    return out


BINS = np.array([[0, 254, 127, 1, 200, 63, 0], [254, 0, 127, 254, 0, 191, 254], [10, 20, 30, 40, 50, 60, 250]])


def test_notes_mode_prompt_prefix_parse_note_and_actions(notes_teacher, images):
    t = notes_teacher
    assert t.spec.writes_notes is True and t.spec.needs_image and t.spec.model_id == "openvla:tiny"
    pads = ["", "plan: pick, place", "plan: pick, place\ndone pick step 31"]
    instr = ["pick the cube", "pick the cube", "place the cube on the goal"]
    # Notes-to-Self's prompt: the scratchpad in <plan>...</plan> right after the question; none when it is empty.
    assert t.build_notes_prompt(instr[0], pads[0]) == (
        "<image>In: What action should the robot take to pick the cube?\nOut:")
    assert t.build_notes_prompt(instr[1], pads[1]) == (
        "<image>In: What action should the robot take to pick the cube?\n<plan>plan: pick, place</plan>\nOut:")
    assert t.build_notes_prompt("is it red? pick it", "plan: pick") == (  # the template's "?", not the instruction's
        "<image>In: What action should the robot take to is it red? pick it?\n<plan>plan: pick</plan>\nOut:")
    forced = [
        _ids(t, "plan", "##:", "pick", "##,", "place", "</plan>", "<think>", "pick", "the", "cube", "</think>", "<act>",
             *BINS[0].tolist()),
        _ids(t, "done", "pick", "step", "3", "##1", "</think>", "<act>", "<done>", *BINS[1].tolist()),
        _ids(t, "place", "the", "cube", "</think>", "<act>", *BINS[2].tolist()),
    ]
    seen = []
    handle = t.model.register_forward_pre_hook(lambda _m, _a, kw: seen.append(kw.get("input_ids")), with_kwargs=True)
    try:
        with forced_tokens(t, _padded(t, forced)) as step:
            rows = t.generate_with_notes(images[:3], instr, pads)
    finally:
        handle.remove()
    assert step["t"] == len(forced[0])  # generation ran until the longest row had its 7 action tokens, no longer
    prompt = seen[0]  # the prefill: left-padded prompts, each ending with its forced prefix
    tag = t.tag_ids
    assert prompt[:, -1].tolist() == [tag["<plan>"], tag["<think>"], tag["<think>"]]
    for i, pad in enumerate(pads):
        row = prompt[i].tolist()
        if not pad:
            assert row.count(tag["<plan>"]) == 1 and tag["</plan>"] not in row  # only the forced prefix
            continue
        start, stop = row.index(tag["<plan>"]), row.index(tag["</plan>"])
        assert row[start + 1:stop] == t.tokenizer(pad, add_special_tokens=False).input_ids  # the scratchpad, as text
        assert t.tokenizer.decode(row[stop + 1:-1]) == "out :"  # then "\nOut:", then the prefix

    assert [r.error for r in rows] == [None, None, None]
    g0, g1, g2 = (r.generation for r in rows)
    assert (g0.plan, g0.think, g0.done) == ("plan: pick, place", "pick the cube", False)
    assert (g1.plan, g1.think, g1.done) == (None, "done pick step 31", True)
    assert (g2.plan, g2.think, g2.done) == (None, "place the cube", False)
    assert rows[0].text == "<plan>plan: pick, place </plan> <think> pick the cube </think><act>"
    assert rows[1].text == "<think>done pick step 31 </think><act><done>"
    for r, bins in zip(rows, BINS):
        np.testing.assert_array_equal(r.action_tokens, [tiny_action_token_id(t.vocab_size, int(k)) for k in bins])
    # The note: the plan of a first answer, the think text of an answer whose act clause holds <done>, else none.
    assert [r.note for r in rows] == ["plan: pick, place", "done pick step 31", ""]

    with forced_tokens(t, _padded(t, forced)):
        response = t.act(TeacherRequest(instructions=instr, images=images[:3], scratchpads=pads,
                                        unnorm_key="bridge_orig"))
    assert response.notes == ["plan: pick, place", "done pick step 31", ""]
    assert response.extras["generation_errors"] == [None] * 3 and response.extras["generations"][1] == rows[1].text
    raw = response.extras["raw_actions"]
    np.testing.assert_allclose(raw, _by_hand(BINS, BRIDGE), rtol=0, atol=1e-12)  # de-tokenized as in plain mode
    np.testing.assert_allclose(response.actions, openvla_to_env(raw))
    assert validate_teacher_actions(response.actions, 3, 4).all()


def test_notes_mode_note_feeds_the_next_prompt(notes_teacher, images):
    """A first answer's plan note, written into a bounded scratchpad, is the next query's <plan>...</plan>."""
    from robot_rl.memory import MemorySpec, Scratchpad

    t = notes_teacher
    pad = Scratchpad(MemorySpec(objects=("cube",), subtasks=("pick", "place")), num_envs=1)
    first = [_ids(t, "plan", "##:", "pick", "##,", "place", "\n", "seen", "cube", "at", "0", "##.", "##6", "##1",
                  "-", "##0", "##.", "##0", "##3", "0", "##.", "##0", "##2", "step", "0", "</plan>", "<think>",
                  "pick", "</think>", "<act>", *BINS[0].tolist())]
    with forced_tokens(t, _padded(t, first)):  # no scratchpad sent: the episode's first query, prefix <plan>
        note = t.act(TeacherRequest(["pick the cube"], images=images[:1], unnorm_key="bridge_orig")).notes[0]
    assert note == "plan: pick, place \n seen cube at 0.61 -0.03 0.02 step 0"
    parsed = pad.write(0, note)
    assert parsed.dropped == 0 and pad.text(0) == "plan: pick, place\nseen cube at 0.610 -0.030 0.020 step 0"
    second = [_ids(t, "pick", "</think>", "<act>", *BINS[1].tolist())]
    with forced_tokens(t, _padded(t, second)):
        rows = t.generate_with_notes(images[:1], ["pick the cube"], pad.texts([0]))
    assert rows[0].text == "<think>pick </think><act>" and rows[0].note == ""
    assert t.build_notes_prompt("pick the cube", pad.text(0)).endswith(f"<plan>{pad.text(0)}</plan>\nOut:")


def test_notes_mode_malformed_generations_are_invalid_rows_not_crashes(notes_teacher, images):
    t = notes_teacher
    good = _ids(t, "pick", "</think>", "<act>", *BINS[2].tolist())
    cases = {  # scratchpad, forced ids, the error
        "no <act>": ("plan: pick", _ids(t, "pick", "</s>"), "no <act> before EOS"),
        "unclosed think": ("plan: pick", _ids(t, "pick", "<act>", *BINS[0].tolist()), "<think> is never closed"),
        "unclosed plan": ("", _ids(t, "plan", "##:", "pick", "<think>", "reach", "</think>", "<act>",
                                   *BINS[0].tolist()), "<plan> is never closed"),
        "3 action tokens": ("plan: pick", _ids(t, "pick", "</think>", "<act>", 1, 2, 3, "</s>"),
                            "3 action tokens after <act>, expected 7"),
        "text among them": ("plan: pick", _ids(t, "pick", "</think>", "<act>", 1, 2, 3, "cube", 4, 5, 6, 7),
                            "a text token among the 7 action tokens"),
        "budget": ("", _ids(t, *["pick"] * 48), "no <act> before the budget of 48 tokens"),
        "good": ("plan: pick", good, None),
    }
    pads = [c[0] for c in cases.values()]
    n = len(cases)
    imgs = np.concatenate([images] * 2)[:n]
    with forced_tokens(t, _padded(t, [c[1] for c in cases.values()])) as step:
        response = t.act(TeacherRequest(instructions=["pick the cube"] * n, images=imgs, scratchpads=pads,
                                        unnorm_key="bridge_orig"))
    assert step["t"] == 48  # the budget row ran to notes_max_new_tokens
    errors = response.extras["generation_errors"]
    for (name, (_, _, want)), got in zip(cases.items(), errors):
        assert (got is None) if want is None else (want in got), (name, got)
    assert np.isnan(response.actions[:-1]).all() and np.isfinite(response.actions[-1]).all()
    assert validate_teacher_actions(response.actions, n, 4).tolist() == [False] * (n - 1) + [True]
    assert response.notes == [""] * n  # no note from a malformed row (nor from a think without <done>)
    np.testing.assert_allclose(response.extras["raw_actions"][-1], _by_hand(BINS[2], BRIDGE), rtol=0, atol=1e-12)


def test_notes_mode_requests_and_constructor_errors(ckpt, notes_teacher, teacher, images, tmp_path):
    with pytest.raises(ValueError, match="scratchpads: got 2 for 1 rows"):
        notes_teacher.generate_with_notes(images[:1], ["push"], ["a", "b"])
    with pytest.raises(TeacherRequestError, match=r"scratchpads: items \[1\] are not strings") as err:
        notes_teacher.check_request(TeacherRequest(["push", "pick"], images=images[:2], scratchpads=["", 3],
                                                   unnorm_key="bridge_orig"))
    assert err.value.field == "scratchpads"
    with pytest.raises(ValueError, match="notes=True"):
        teacher.generate_with_notes(images[:1], ["push"])
    with pytest.raises(ValueError, match="notes_max_new_tokens"):
        OpenVLATeacher(ckpt, notes=True, notes_max_new_tokens=7)
    # A tokenizer that splits a tag cannot be served in notes mode (plain mode does not care).
    split = tmp_path / "split"
    shutil.copytree(ckpt, split)
    tok = json.loads((split / "tokenizer.json").read_text())
    tok["added_tokens"] = [a for a in tok["added_tokens"] if a["content"] != "<act>"]
    (split / "tokenizer.json").write_text(json.dumps(tok))
    with pytest.raises(ValueError, match=r"one token of the tokenizer; it splits <act> -> \["):
        OpenVLATeacher(split, notes=True)
    # Plain mode: the scratchpad is ignored, answers carry no notes.
    with_pad = teacher.act(TeacherRequest(INSTRUCTIONS[:2], images=images[:2], scratchpads=["plan: pick", ""],
                                          unnorm_key="bridge_orig"))
    without = teacher.act(TeacherRequest(INSTRUCTIONS[:2], images=images[:2], unnorm_key="bridge_orig"))
    np.testing.assert_array_equal(with_pad.actions, without.actions)
    assert with_pad.notes is None and teacher.spec.writes_notes is False
