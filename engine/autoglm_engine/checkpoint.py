"""The PyTorch checkpoint: its digest, a tiny GLM-family model made in code, and loading one.

``checkpoint_digest`` names a checkpoint folder by its content alone: it hashes the sorted relative
file names, each file's size and bytes, so it does not change with mtimes, copies or the order a
file system lists a folder in, and changes when any byte of any file does.

``make_tiny_glm`` writes a GLM causal LM (transformers' ``GlmForCausalLM``) with random weights made
in code, saved with ``save_pretrained`` as safetensors: nothing is ever downloaded. torch and
transformers are imported inside the functions that need them (the ``export`` extra).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

_CHUNK = 1 << 20


def checkpoint_files(directory: str | os.PathLike[str]) -> list[Path]:
    """The regular files under ``directory`` (links followed), sorted by their relative POSIX path."""
    root = Path(directory)
    if not root.is_dir():
        raise FileNotFoundError(f"checkpoint folder {root} does not exist")
    return sorted((p for p in root.rglob("*") if p.is_file()), key=lambda p: p.relative_to(root).as_posix())


def checkpoint_digest(directory: str | os.PathLike[str]) -> str:
    """``sha256:<hex>`` over the folder's sorted relative file names, sizes and contents."""
    root = Path(directory)
    files = checkpoint_files(root)
    if not files:
        raise FileNotFoundError(f"checkpoint folder {root} holds no file")
    digest = hashlib.sha256()
    for path in files:
        name = path.relative_to(root).as_posix().encode()
        digest.update(b"%d:%s:%d\n" % (len(name), name, path.stat().st_size))
        with path.open("rb") as f:
            while chunk := f.read(_CHUNK):
                digest.update(chunk)
    return f"sha256:{digest.hexdigest()}"


def make_tiny_glm(out_dir: str | os.PathLike[str], *, seed: int = 0, vocab: int = 1000, hidden: int = 64,
                  layers: int = 2, heads: int = 4, kv_heads: int = 2, head_dim: int = 16,
                  intermediate: int | None = None, max_positions: int = 2048) -> Path:
    """Write a GLM-family causal LM with random weights (seeded) to ``out_dir``; return the folder.

    The defaults make a 0.2 M-parameter model. ``head_dim`` and ``pad_token_id`` are set explicitly
    (GlmConfig defaults them to 128 and to 151329, beyond a small vocabulary); ``eos_token_id`` is None
    so greedy generation runs to its full length."""
    import torch
    from transformers import GlmConfig, GlmForCausalLM
    from transformers.utils import logging as hf_logging

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    config = GlmConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=intermediate or 4 * hidden,
                       num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv_heads,
                       head_dim=head_dim, max_position_embeddings=max_positions, pad_token_id=0,
                       bos_token_id=None, eos_token_id=None, use_cache=False, tie_word_embeddings=False)
    torch.manual_seed(seed)
    model: Any = GlmForCausalLM(config)
    model.eval()
    model.generation_config.pad_token_id = 0
    model.generation_config.eos_token_id = None
    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    model.save_pretrained(out, safe_serialization=True)
    return out


def load_causal_lm(checkpoint_dir: str | os.PathLike[str]) -> Any:
    """The checkpoint's causal LM in float32, eval mode, no KV cache (for export and as the reference)."""
    import torch
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]  # "Loading weights" bars bury errors
    model: Any = AutoModelForCausalLM.from_pretrained(str(checkpoint_dir), dtype=torch.float32)
    model.config.use_cache = False
    return model.eval()


def parameter_bytes(model: Any) -> int:
    """Bytes the model's parameters and buffers take (to decide on ONNX external data)."""
    total = 0
    for tensor in [*model.parameters(), *model.buffers()]:
        total += int(tensor.numel()) * int(tensor.element_size())
    return total
