r"""A tiny OpenVLA-style checkpoint built locally, for tests and benchmarks; random weights.

No model can be downloaded on these machines (FACTS.md, VLA teachers), so the code path of
:class:`robot_rl.teachers.openvla.OpenVLATeacher` (processor -> ``generate`` -> 256-bin
de-tokenization -> un-normalization) is exercised on a checkpoint this module builds and writes
with ``save_pretrained``. Its layout is the one a transformers-native OpenVLA checkpoint needs:

- model: :class:`transformers.LlavaForConditionalGeneration` (a tiny CLIP vision tower, 224 px,
  32 px patches -> 49 image tokens, and a tiny Llama decoder), loadable with
  ``AutoModelForImageTextToText``;
- tokenizer: a word-level ``tokenizers`` vocabulary laid out like OpenVLA's Llama-2 one: special
  tokens first, then the words of OpenVLA's prompt template and of ManiSkill task instructions,
  then Notes-to-Self's tags (:data:`NOTES_TAGS`, single special tokens) and the pieces notes are
  written in (:data:`NOTE_WORDS`), then filler tokens, and the **last** :data:`N_ACTION_BINS` ids
  are the action tokens (id ``vocab_size - 1 - k`` is named ``<act_k>``: bin ``k``, so
  ``<act_000>`` is the most negative bin, as in OpenVLA's ``ActionTokenizer``); lower-cased, BOS
  prepended (as Llama-2 does). Decoding joins tokens with spaces except the ``##`` pieces, which
  join the token before them (a WordPiece decoder), so a generation forced token by token decodes
  to an exact note: ``plan ##: pick ##, place`` -> ``"plan: pick, place"``, ``0 ##. ##6`` -> ``"0.6"``;
  the ``"\n"`` token separates note lines. (Encoding splits words and punctuation, so a prompt does
  not round-trip; only what is generated needs to.)
- processor: ``LlavaProcessor`` (PIL CLIP image processor resizing to ``image_size`` x
  ``image_size`` with no crop, and the ``<image>`` placeholder that it expands to 49 tokens),
  loadable with ``AutoProcessor``;
- ``norm_stats`` in OpenVLA's format (two keys, :data:`TINY_NORM_STATS`) in ``config.json`` and
  in ``dataset_statistics.json``.

By default the vocabulary is not Llama-2's (its size is 384, not 32000), so the teacher does not
append OpenVLA's token 29871 to its prompts; ``save_tiny_vla(..., vocab_size=32000)`` builds one
that has Llama-2's size, to exercise that rule.
"""

from __future__ import annotations

import json
from pathlib import Path

#: Number of action bins (= action tokens at the end of the vocabulary), as in OpenVLA.
N_ACTION_BINS = 256
#: Vision tower patch size; ``image_size`` must be a multiple of it.
PATCH_SIZE = 32
#: Size of the text part of the vocabulary (specials + words + fillers), before the action tokens.
N_TEXT_TOKENS = 128
#: Default base vocabulary size of the tiny tokenizer (text tokens + action tokens). Passing
#: ``vocab_size=32000`` (Llama-2's) to :func:`save_tiny_vla` makes the teacher append token 29871.
DEFAULT_VOCAB_SIZE = N_TEXT_TOKENS + N_ACTION_BINS
#: Special tokens, in id order (ids 0..4).
PAD_TOKEN, BOS_TOKEN, EOS_TOKEN, UNK_TOKEN, IMAGE_TOKEN = "<pad>", "<s>", "</s>", "<unk>", "<image>"
SPECIAL_TOKENS = (PAD_TOKEN, BOS_TOKEN, EOS_TOKEN, UNK_TOKEN, IMAGE_TOKEN)
#: Words of OpenVLA's prompt template and of this project's task instructions (lower case; the
#: tokenizer lower-cases its input). Anything else becomes ``<unk>``.
PROMPT_WORDS = (
    "in", "out", ":", "?", "what", "action", "should", "the", "robot", "take", "to",
    "push", "pick", "place", "put", "lift", "pull", "poke", "stack", "insert", "move", "grasp",
    "cube", "peg", "sphere", "block", "goal", "target", "region", "hole", "side", "upright",
    "red", "green", "blue", "a", "and", "on", "onto", "of", "top", "up", "it", "into", "with",
    ".", ",",
)
#: Notes-to-Self's tags (:mod:`robot_rl.memory.notes_to_self`), each one special token (as the OpenVLA backend's
#: notes mode needs).
NOTES_TAGS = ("<plan>", "</plan>", "<think>", "</think>", "<act>", "<done>")
#: Pieces of the scratchpad's line format (:mod:`robot_rl.memory.scratchpad`) for generated notes: words, digits,
#: ``-``, the newline, and ``##`` continuations (``##:``, ``##,``, ``##.``, ``##0``..``##9``) glued to the token
#: before them when decoded.
NOTE_WORDS = (
    ("plan", "seen", "at", "step", "done", "reach", "restore", "back", "start", "-", "\n")
    + tuple(str(d) for d in range(10)) + ("##:", "##,", "##.") + tuple(f"##{d}" for d in range(10))
)
#: OpenVLA-format dataset statistics of the tiny checkpoint (``{key: {"action": {...}}}``):
#: distinct q01/q99 per key; the gripper (last) dimension is not un-normalized (mask false).
TINY_NORM_STATS: dict[str, dict] = {
    "bridge_orig": {
        "action": {
            "q01": [-0.03, -0.04, -0.05, -0.10, -0.12, -0.20, 0.0],
            "q99": [0.03, 0.04, 0.05, 0.10, 0.12, 0.20, 1.0],
            "mask": [True, True, True, True, True, True, False],
        }
    },
    "fractal20220817_data": {
        "action": {
            "q01": [-0.20, -0.25, -0.15, -0.30, -0.35, -0.40, 0.0],
            "q99": [0.18, 0.22, 0.12, 0.28, 0.33, 0.45, 1.0],
            "mask": [True, True, True, True, True, True, False],
        }
    },
}
#: Model sizes: small enough that 7 greedy tokens for 32 images take well under a second on CPU.
VISION_HIDDEN, VISION_LAYERS, VISION_HEADS = 32, 2, 2
TEXT_HIDDEN, TEXT_LAYERS, TEXT_HEADS = 64, 2, 4
#: Std of the random weights; larger than the usual 0.02 so greedy tokens depend on the input.
INIT_STD = 0.2


def tiny_vocabulary(vocab_size: int = DEFAULT_VOCAB_SIZE) -> list[str]:
    """The tiny tokenizer's ``vocab_size`` tokens in id order: specials, prompt words, notes tags and words,
    fillers, 256 action tokens.

    Raises:
        ValueError: ``vocab_size`` leaves no room for the specials, the words and the action tokens.
    """
    text = list(SPECIAL_TOKENS) + list(PROMPT_WORDS) + list(NOTES_TAGS) + list(NOTE_WORDS)
    if vocab_size < len(text) + N_ACTION_BINS:
        raise ValueError(f"vocab_size must be >= {len(text) + N_ACTION_BINS}, got {vocab_size}")
    text += [f"<filler_{i:05d}>" for i in range(vocab_size - N_ACTION_BINS - len(text))]
    # id vocab_size - 1 - k is bin k (OpenVLA: discretized = vocab_size - id, bin = discretized - 1).
    actions = [f"<act_{k:03d}>" for k in reversed(range(N_ACTION_BINS))]
    return text + actions


def build_tiny_tokenizer(vocab_size: int = DEFAULT_VOCAB_SIZE):
    """A ``PreTrainedTokenizerFast`` over :func:`tiny_vocabulary` (word level, lower-cased, BOS first;
    decoded with ``##`` continuations, module docstring).

    ``tokenizer.vocab_size == len(tokenizer) == vocab_size`` (the specials and the notes tags are in
    the base vocabulary, so nothing is added after the action tokens).
    """
    from tokenizers import Tokenizer, decoders, normalizers, pre_tokenizers, processors
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(tiny_vocabulary(vocab_size))}
    tok = Tokenizer(WordLevel(vocab=vocab, unk_token=UNK_TOKEN))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS_TOKEN} $A", pair=f"{BOS_TOKEN} $A $B", special_tokens=[(BOS_TOKEN, vocab[BOS_TOKEN])]
    )
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=False)
    tok.add_special_tokens(list(SPECIAL_TOKENS) + list(NOTES_TAGS))
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token=PAD_TOKEN,
        bos_token=BOS_TOKEN,
        eos_token=EOS_TOKEN,
        unk_token=UNK_TOKEN,
        extra_special_tokens={"image_token": IMAGE_TOKEN},
        padding_side="left",
    )
    return fast


def save_tiny_vla(
    path: str | Path, seed: int = 0, image_size: int = 224, vocab_size: int = DEFAULT_VOCAB_SIZE
) -> Path:
    """Build the tiny random-weight VLA and write it to ``path`` (for tests and benchmarks; random weights).

    Args:
        path: output directory (created; existing files are overwritten).
        seed: torch seed for the random weights (the global torch RNG state is restored after).
        image_size: side in pixels the processor resizes images to; a multiple of :data:`PATCH_SIZE`.
        vocab_size: base vocabulary size; 32000 (Llama-2's) exercises OpenVLA's token-29871 rule
            (a filler token there), at the cost of a larger LM head.

    Returns:
        ``path`` as a :class:`Path`. ``AutoModelForImageTextToText.from_pretrained(path)`` and
        ``AutoProcessor.from_pretrained(path)`` load it back; ``config.json`` carries ``norm_stats``
        and ``dataset_statistics.json`` holds the same :data:`TINY_NORM_STATS`.

    Raises:
        ValueError: ``image_size`` is not a positive multiple of :data:`PATCH_SIZE`, or
            ``vocab_size`` is too small (see :func:`tiny_vocabulary`).
    """
    import torch
    from transformers import (
        CLIPImageProcessorPil,
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )

    if image_size <= 0 or image_size % PATCH_SIZE:
        raise ValueError(f"image_size must be a positive multiple of {PATCH_SIZE}, got {image_size}")
    tokenizer = build_tiny_tokenizer(vocab_size)
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    image_token_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    n_image_tokens = (image_size // PATCH_SIZE) ** 2

    vision = CLIPVisionConfig(
        hidden_size=VISION_HIDDEN,
        intermediate_size=2 * VISION_HIDDEN,
        num_hidden_layers=VISION_LAYERS,
        num_attention_heads=VISION_HEADS,
        image_size=image_size,
        patch_size=PATCH_SIZE,
        projection_dim=VISION_HIDDEN,
        initializer_range=INIT_STD,
    )
    text = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=TEXT_HIDDEN,
        intermediate_size=2 * TEXT_HIDDEN,
        num_hidden_layers=TEXT_LAYERS,
        num_attention_heads=TEXT_HEADS,
        num_key_value_heads=TEXT_HEADS,
        max_position_embeddings=512,
        initializer_range=INIT_STD,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    config = LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=image_token_id,
        image_seq_length=n_image_tokens,
        vision_feature_select_strategy="default",  # drop CLIP's CLS token: 49 image tokens at 224 px
        vision_feature_layer=-1,
    )
    config.norm_stats = TINY_NORM_STATS
    config.n_action_bins = N_ACTION_BINS

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlavaForConditionalGeneration(config).eval()
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id

    image_processor = CLIPImageProcessorPil(
        size={"height": image_size, "width": image_size},
        do_center_crop=False,
        crop_size={"height": image_size, "width": image_size},
    )
    processor = LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=PATCH_SIZE,
        vision_feature_select_strategy="default",
        image_token=IMAGE_TOKEN,
        num_additional_image_tokens=1,  # CLIP's CLS token (dropped again by "default")
    )

    model.save_pretrained(path)
    processor.save_pretrained(path)
    (path / "dataset_statistics.json").write_text(json.dumps(TINY_NORM_STATS, indent=2))
    return path


def tiny_action_token_id(vocab_size: int, bin_index: int) -> int:
    """Token id of action bin ``bin_index`` (0..255) in a vocabulary of ``vocab_size`` (OpenVLA layout)."""
    if not 0 <= bin_index < N_ACTION_BINS:
        raise ValueError(f"bin_index must be in [0, {N_ACTION_BINS}), got {bin_index}")
    return int(vocab_size - 1 - bin_index)


__all__ = [
    "DEFAULT_VOCAB_SIZE",
    "NOTES_TAGS",
    "NOTE_WORDS",
    "N_ACTION_BINS",
    "PATCH_SIZE",
    "TINY_NORM_STATS",
    "build_tiny_tokenizer",
    "save_tiny_vla",
    "tiny_action_token_id",
    "tiny_vocabulary",
]
