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

from robot_rl.teachers.base import Teacher, TeacherRequest
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
