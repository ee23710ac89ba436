"""A tiny random-weight GGUF model for tests of the llama.cpp backend, written
with the `gguf` package: no download, about half a megabyte.

A llama architecture (2 layers, 64 dimensions, 4 heads) with a byte-level
SentencePiece-style vocabulary: the unknown, start and end tokens, the 256 byte
tokens `<0xNN>` (any text can be spelled with them) and one piece per printable
ASCII character, so ASCII text is one token per character. Its output is noise;
a grammar is what gives it shape.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from gguf import GGUFWriter, TokenType

LAYERS = 2
DIMS = 64
HEADS = 4
FEED_FORWARD = 128
CONTEXT = 4096
#: SentencePiece's word-boundary mark, which stands for a space.
SPACE = "\u2581"


def vocabulary() -> tuple[list[str], list[float], list[int]]:
    """Tokens, scores and token types, special tokens first."""
    tokens = ["<unk>", "<s>", "</s>"]
    types = [TokenType.UNKNOWN, TokenType.CONTROL, TokenType.CONTROL]
    tokens += [f"<0x{b:02X}>" for b in range(256)]
    types += [TokenType.BYTE] * 256
    pieces = [SPACE if c == " " else c for c in map(chr, range(0x20, 0x7F))]
    tokens += pieces
    types += [TokenType.NORMAL] * len(pieces)
    scores = [0.0] * (len(tokens) - len(pieces)) + [-float(i) for i in range(len(pieces))]
    return tokens, scores, [int(t) for t in types]


def write_tiny_model(path: Path, seed: int = 0) -> Path:
    """Writes the model to `path` (the same bytes for the same seed)."""
    tokens, scores, types = vocabulary()
    rng = np.random.default_rng(seed)

    def weights(*shape: int) -> np.ndarray:
        # numpy's shape is GGUF's dimensions reversed: (rows, columns) = (out, in).
        return rng.normal(0.0, 0.5, shape).astype(np.float32)

    writer = GGUFWriter(path, "llama")
    writer.add_name("janus-policy tiny test model")
    writer.add_context_length(CONTEXT)
    writer.add_embedding_length(DIMS)
    writer.add_block_count(LAYERS)
    writer.add_feed_forward_length(FEED_FORWARD)
    writer.add_head_count(HEADS)
    writer.add_head_count_kv(HEADS)
    writer.add_rope_dimension_count(DIMS // HEADS)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_vocab_size(len(tokens))
    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens)
    writer.add_token_scores(scores)
    writer.add_token_types(types)
    writer.add_unk_token_id(0)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)

    writer.add_tensor("token_embd.weight", weights(len(tokens), DIMS))
    for i in range(LAYERS):
        block = f"blk.{i}"
        writer.add_tensor(f"{block}.attn_norm.weight", np.ones(DIMS, np.float32))
        for name in ("attn_q", "attn_k", "attn_v", "attn_output"):
            writer.add_tensor(f"{block}.{name}.weight", weights(DIMS, DIMS))
        writer.add_tensor(f"{block}.ffn_norm.weight", np.ones(DIMS, np.float32))
        writer.add_tensor(f"{block}.ffn_gate.weight", weights(FEED_FORWARD, DIMS))
        writer.add_tensor(f"{block}.ffn_up.weight", weights(FEED_FORWARD, DIMS))
        writer.add_tensor(f"{block}.ffn_down.weight", weights(DIMS, FEED_FORWARD))
    writer.add_tensor("output_norm.weight", np.ones(DIMS, np.float32))
    writer.add_tensor("output.weight", weights(len(tokens), DIMS))

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
