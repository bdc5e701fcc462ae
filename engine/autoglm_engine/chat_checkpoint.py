"""A tiny GLM-4.1V (``Glm4vForConditionalGeneration``, AutoGLM-Phone-9B's architecture) made in code, for an
OpenAI-compatible server (vLLM's) to serve with images in chat messages, as the phone agent sends them.

``make_tiny_glm4v(out_dir, seed=0)`` writes a Hugging Face folder vLLM (CPU build) serves, nothing downloaded:

- ``config.json``: ``Glm4vConfig`` with a tiny ``text_config`` (hidden 128, 2 layers, 4 heads, 2 kv heads,
  head_dim 32: vLLM's CPU attention refuses 16; partial_rotary_factor 0.5 -> 16 rotary dims -> ``mrope_section``
  [2, 3, 3], which sums to rotary_dim / 2) and a tiny ``vision_config`` (depth 1, hidden 64, 2 heads, patch 14,
  spatial_merge_size 2, temporal_patch_size 2, image_size 112, out_hidden_size = the text hidden size 128).
  The image/video special-token ids in the config are the tokenizer's.
- ``model.safetensors``: random weights (seeded; the same seed writes the same bytes).
- A byte-level BPE tokenizer trained here (``tokenizers``) with GLM's special tokens (``[gMASK]``, ``<sop>``,
  roles, ``<|begin_of_image|>``, ``<|image|>``, ``<|end_of_image|>`` and the video ones) and a chat template
  that renders an image part as ``<|begin_of_image|><|image|><|end_of_image|>``.
- ``Glm4vProcessor``'s files with ``size`` bounded so an image is resized to at most 112x112 pixels
  (8x8 patches -> 16 image tokens after the 2x2 merge).

It generates random text (random weights): it proves the serving path (chat template with an image, image
preprocessing, vision encoder, M-RoPE prefill, decode, streaming, metrics), not vision or language.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path
from typing import Any

END_OF_TEXT = "<|endoftext|>"
IMAGE_TOKENS = ("<|begin_of_image|>", "<|image|>", "<|end_of_image|>")
VIDEO_TOKENS = ("<|begin_of_video|>", "<|video|>", "<|end_of_video|>")
SPECIAL_TOKENS = (END_OF_TEXT, "[gMASK]", "<sop>", "<|system|>", "<|user|>", "<|assistant|>",
                  "<|observation|>", *IMAGE_TOKENS, *VIDEO_TOKENS, "<|pad|>")

#: GLM-4.1V's chat layout: a role tag, a newline, the content; the assistant's turn opened for generation.
#: ``content`` is a string or a list of OpenAI-style parts; an image part (vLLM passes {"type": "image"};
#: "image_url" is accepted too) becomes <|begin_of_image|><|image|><|end_of_image|>, which the processor
#: expands to one <|image|> per merged patch. Newlines are written as expressions (trim_blocks).
CHAT_TEMPLATE = (
    "[gMASK]<sop>"
    "{% for message in messages %}<|{{ message['role'] }}|>{{ '\\n' }}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'text' %}{{ part['text'] }}"
    "{% elif part['type'] in ('image', 'image_url', 'image_pil', 'image_embeds') %}"
    "<|begin_of_image|><|image|><|end_of_image|>"
    "{% elif part['type'] in ('video', 'video_url') %}<|begin_of_video|><|video|><|end_of_video|>"
    "{% endif %}{% endfor %}{% endif %}{{ '\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{{ '\\n' }}{% endif %}")

_WORDS = ("tap", "swipe", "open", "the", "settings", "screen", "button", "search", "type", "back", "home",
          "scroll", "down", "up", "app", "message", "send", "photo", "camera", "wifi", "battery", "menu",
          "select", "confirm", "cancel", "calendar", "event", "map", "route", "music", "play", "pause",
          "volume", "brightness", "notification", "reply", "call", "contact", "email", "browser", "page",
          "link", "text", "field", "keyboard", "done", "next", "previous", "shop", "cart", "order", "pay",
          "image", "picture", "describe", "what", "is", "in", "this", "red", "green", "blue", "square")

PATCH = 14
MERGE = 2
TEMPORAL_PATCH = 2
IMAGE_SIDE = 112  # largest side (pixels) an image is resized to: 8x8 patches -> 16 image tokens
MIN_PIXELS = IMAGE_SIDE * IMAGE_SIDE          # smart_resize compares t*h*w (t = 2 for an image)
MAX_PIXELS = TEMPORAL_PATCH * IMAGE_SIDE * IMAGE_SIDE
#: The image normalisation GLM-4.1V's processor uses (CLIP's).
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def _corpus(seed: int, sentences: int = 600) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(_WORDS) for _ in range(rng.randint(4, 14))) + rng.choice((".", "?", "!"))
            for _ in range(sentences)]


def train_tokenizer(seed: int = 0, vocab: int = 512) -> Any:
    """A byte-level BPE tokenizer trained on a generated corpus, GLM's special tokens first."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE(unk_token=None))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab, special_tokens=list(SPECIAL_TOKENS),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    bpe.train_from_iterator(_corpus(seed), trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=bpe, eos_token=END_OF_TEXT, pad_token="<|pad|>", bos_token=None, unk_token=None,
        model_max_length=4096)
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def make_tiny_glm4v(out_dir: str | os.PathLike[str], seed: int = 0) -> Path:
    """Write the tiny GLM-4.1V checkpoint (random seeded weights, tokenizer, processor) to ``out_dir``."""
    import torch
    from transformers import Glm4vConfig, Glm4vForConditionalGeneration
    from transformers.utils import logging as hf_logging

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = train_tokenizer(seed=seed)
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}

    text_hidden = 128
    text_config = {
        "vocab_size": len(tokenizer), "hidden_size": text_hidden, "intermediate_size": 4 * text_hidden,
        "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,  # head_dim 128 / 4 = 32
        "max_position_embeddings": 4096, "rms_norm_eps": 1e-5, "pad_token_id": ids["<|pad|>"],
        "eos_token_id": ids[END_OF_TEXT], "bos_token_id": None, "tie_word_embeddings": False,
        # 32 * 0.5 = 16 rotary dims = 8 frequencies, split over (t, h, w) by mrope_section
        "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.5,
                         "mrope_section": [2, 3, 3]},
    }
    vision_config = {
        "depth": 1, "hidden_size": 64, "num_heads": 2,  # head_dim 32
        "intermediate_size": 256, "out_hidden_size": text_hidden, "hidden_act": "silu", "in_channels": 3,
        "image_size": IMAGE_SIDE, "patch_size": PATCH, "spatial_merge_size": MERGE, "temporal_patch_size": TEMPORAL_PATCH,
        "rms_norm_eps": 1e-5,
    }
    config = Glm4vConfig(
        text_config=text_config, vision_config=vision_config,
        image_token_id=ids["<|image|>"], video_token_id=ids["<|video|>"],
        image_start_token_id=ids["<|begin_of_image|>"], image_end_token_id=ids["<|end_of_image|>"],
        video_start_token_id=ids["<|begin_of_video|>"], video_end_token_id=ids["<|end_of_video|>"],
        tie_word_embeddings=False,
    )
    config.eos_token_id = ids[END_OF_TEXT]
    config.pad_token_id = ids["<|pad|>"]

    torch.manual_seed(seed)
    model: Any = Glm4vForConditionalGeneration(config)
    model.eval()
    model.generation_config.eos_token_id = ids[END_OF_TEXT]
    model.generation_config.pad_token_id = ids["<|pad|>"]
    model.generation_config.bos_token_id = None
    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    model.save_pretrained(out, safe_serialization=True)

    # Glm4vProcessor's files, written as transformers writes them (the classes need PIL and torchvision,
    # which the serving image has and this package does not require): CLIP's normalisation, sizes in pixels.
    size = {"longest_edge": MAX_PIXELS, "shortest_edge": MIN_PIXELS}
    common = {"do_convert_rgb": True, "do_normalize": True, "do_rescale": True, "do_resize": True,
              "image_mean": list(CLIP_MEAN), "image_std": list(CLIP_STD), "merge_size": MERGE, "patch_size": PATCH,
              "resample": 3, "rescale_factor": 1 / 255, "size": size, "temporal_patch_size": TEMPORAL_PATCH}
    processor = {"image_processor": {**common, "image_processor_type": "Glm4vImageProcessor"},
                 "processor_class": "Glm4vProcessor",
                 "video_processor": {**common, "do_sample_frames": True, "fps": 1, "max_duration": 300,
                                     "max_image_size": {"longest_edge": MAX_PIXELS}, "num_frames": 2,
                                     "return_metadata": False, "video_processor_type": "Glm4vVideoProcessor"}}
    (out / "processor_config.json").write_text(json.dumps(processor, indent=2, sort_keys=True) + "\n")
    tokenizer.save_pretrained(str(out))  # tokenizer.json, tokenizer_config.json, chat_template.jinja
    tokenizer_config = out / "tokenizer_config.json"
    tokenizer_config.write_text(json.dumps({**json.loads(tokenizer_config.read_text()),
                                            "processor_class": "Glm4vProcessor"}, indent=2) + "\n")
    return out

