"""The generator / discriminator LLM: a Llama-architecture causal LM whose vocabulary includes one token per item.

`base_model=None` builds a small Llama from config (the CPU default; sizes in `ModelConfig` were picked by
measurement, see benchmarks/results/llm_sft.md); a local path loads a pretrained checkpoint (e.g. Llama-2-7B),
never remote code. New item tokens start near their text: on a pretrained base as the mean of the embeddings of
their title's tokens ("title_mean"); on a scratch model, whose own text embeddings are random, from a pretrained
base's token embeddings of the item's text projected to the model's width ("text_pca"), or from that base's
final hidden states over the text ("text_encoder_pca").
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from llm_i2i.io import atomic_dir
from llm_i2i.llm.bases import resolve_base_model

MANIFEST = "llm_i2i_manifest.json"
# item_init values that place new item tokens by their text, and the text vector each reads (text_embeddings)
TEXT_INITS = {"text_pca": "token_mean", "text_encoder_pca": "final_mean"}
log = logging.getLogger(__name__)


@dataclass
class ModelConfig:
    base_model: str | None = None  # packaged name (smollm2-135m), HF checkpoint dir or .gguf (bases.py); None: scratch
    hidden_size: int = 128
    num_layers: int = 2
    num_heads: int = 4
    num_kv_heads: int | None = None
    intermediate_size: int = 384
    max_position_embeddings: int = 1024
    tie_word_embeddings: bool = True
    dtype: str = "auto"  # auto (bfloat16 for a pretrained base on CUDA, else float32) | float32 | bfloat16 | float16
    attn_implementation: str = "auto"  # auto: flash_attention_2 on CUDA with fp16/bf16 if installed, else sdpa
    # how new item tokens start: auto (title_mean on a pretrained base, text_pca from scratch) | title_mean | random |
    # text_pca (the PCA of `item_text_base`'s mean token embedding of each item's text; on Toys
    # with no config, Swing +34.8% against +20.4% from random rows, benchmarks/results/item_text_init.md) |
    # text_encoder_pca (the same PCA over the base's final hidden states, one forward pass per item text, cached
    # per node: it separates co-interacted items better, benchmarks/results/item_text_encoders.md, but end to end
    # it did not beat text_pca on both datasets, docs/llm.md; 17-23 min per 12k items on 2 CPU cores)
    item_init: str = "auto"
    item_text_base: str = "smollm2-135m"  # the pretrained base (a base_model value) text_pca reads token embeddings from
    vocab_size: int = 4000  # sub-word vocabulary trained for a scratch model
    # training-time dropout on token embeddings and attention: a small model on sparse histories overfits fast
    # (with the SFT defaults of sft_config.py, Beauty with no config: Swing R@10 +22.8% / +25.6% against +14.9% with
    # no dropout and the previous defaults, benchmarks/results/beauty_idle.md); a large pretrained base usually wants 0
    dropout: float = 0.2
    # LoRA (peft) instead of full fine-tuning: adapters of this rank on every projection of the top `lora_layers`
    # decoder layers (0: all), everything else frozen, item-token rows included (they keep their init). Backward
    # stops at the lowest adapted layer, which is what makes a pretrained base cheaper to tune; the checkpoint is
    # written with the adapters merged in, a plain HF model. 0: full fine-tuning. On CPU it did not pay
    # (benchmarks/results/disc_pretrained_slice.md); on a GPU it is the cheap way to tune a 7B base
    lora_rank: int = 0
    lora_layers: int = 0

    # added after checkpoints were cached: at 0 they train what was trained before, so keys stay (config.result_config)
    UNKEYED_AT_DEFAULT = ("lora_rank", "lora_layers")

    def validate(self) -> None:
        if self.hidden_size % self.num_heads:
            raise ValueError(f"model.hidden_size {self.hidden_size} not divisible by num_heads {self.num_heads}")
        if self.dtype not in ("auto", "float32", "bfloat16", "float16"):
            raise ValueError(f"model.dtype must be auto|float32|bfloat16|float16, got {self.dtype!r}")
        if self.item_init not in ("auto", "title_mean", "random", *TEXT_INITS):
            raise ValueError(f"model.item_init must be auto|title_mean|random|{'|'.join(TEXT_INITS)}, "
                             f"got {self.item_init!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"model.dropout must be in [0, 1), got {self.dropout}")
        if self.attn_implementation not in ("auto", "sdpa", "eager", "flash_attention_2"):
            raise ValueError(f"model.attn_implementation unknown: {self.attn_implementation!r}")
        if self.lora_rank < 0 or self.lora_layers < 0:
            raise ValueError(f"model.lora_rank and model.lora_layers must be >= 0, got {self.lora_rank}, {self.lora_layers}")
        if self.lora_rank and not self.base_model:
            raise ValueError("model.lora_rank needs a model.base_model: adapters on random weights learn nothing a "
                             "full fine-tune of the small scratch model would not")

    @property
    def resolved_item_init(self) -> str:
        """`item_init` with "auto" replaced by what it means for this model."""
        if self.item_init != "auto":
            return self.item_init
        return "title_mean" if self.base_model else "text_pca"

    def torch_dtype(self, device: torch.device | str = "cpu") -> torch.dtype:
        """The weights' dtype on `device`: "auto" trains a pretrained base in bf16 on CUDA and everything else in
        fp32 (a scratch model is small, and CPU bf16 matmuls are slower than fp32 on most CPUs)."""
        if self.dtype != "auto":
            return getattr(torch, self.dtype)
        return torch.bfloat16 if self.base_model and torch.device(device).type == "cuda" else torch.float32


def resolve_attn_implementation(requested: str, dtype: torch.dtype, device: torch.device | str = "cpu") -> str:
    """FlashAttention-2 only where it runs: CUDA with fp16/bf16 weights and flash_attn installed; else SDPA."""
    fa2_fits = torch.device(device).type == "cuda" and dtype in (torch.float16, torch.bfloat16)
    if requested == "flash_attention_2" and not fa2_fits:
        raise ValueError(f"model.attn_implementation=flash_attention_2 needs CUDA and fp16/bf16, got {device} {dtype}")
    if requested != "auto":
        return requested
    if fa2_fits:
        try:
            import flash_attn  # noqa: F401

            return "flash_attention_2"
        except ImportError:
            pass
    return "sdpa"


def build_model(cfg: ModelConfig, tokenizer, items=None, device: torch.device | str = "cpu"):
    """LlamaForCausalLM sized for `tokenizer` (item tokens included) on `device`, in the dtype `cfg` resolves to
    there; `items` (ITEMS_SCHEMA) enables title_mean init."""
    from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

    cfg.validate()
    dtype = cfg.torch_dtype(device)
    attn = resolve_attn_implementation(cfg.attn_implementation, dtype, device)
    if cfg.base_model is None:
        lcfg = LlamaConfig(
            vocab_size=len(tokenizer),
            hidden_size=cfg.hidden_size,
            intermediate_size=cfg.intermediate_size,
            num_hidden_layers=cfg.num_layers,
            num_attention_heads=cfg.num_heads,
            num_key_value_heads=cfg.num_kv_heads or cfg.num_heads,
            max_position_embeddings=cfg.max_position_embeddings,
            tie_word_embeddings=cfg.tie_word_embeddings,
            pad_token_id=tokenizer.pad_token_id,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
        lcfg._attn_implementation = attn
        model = LlamaForCausalLM(lcfg).to(dtype)
        n_old = 0
    else:
        model = AutoModelForCausalLM.from_pretrained(
            resolve_base_model(cfg.base_model), dtype=dtype, attn_implementation=attn, trust_remote_code=False, local_files_only=True
        )
        n_old = model.get_input_embeddings().weight.shape[0]
        model.resize_token_embeddings(len(tokenizer))
        model.config.pad_token_id = tokenizer.pad_token_id
    if items is not None and cfg.resolved_item_init == "title_mean":
        init_item_embeddings(model, tokenizer, items, first_new_token=n_old)
    if items is not None and cfg.resolved_item_init in TEXT_INITS:
        placed, untexted = init_item_embeddings_from_text(model, tokenizer, items, cfg.item_text_base, n_old,
                                                          encoder=TEXT_INITS[cfg.resolved_item_init], device=device)
        if placed or untexted:
            log.info(f"new item tokens placed by their text ({cfg.item_text_base}): {placed}; "
                     f"without text, left random: {untexted}")
    if cfg.dropout:
        add_dropout(model, cfg.dropout)
    if cfg.lora_rank:
        add_lora(model, cfg.lora_rank, cfg.lora_layers)
    return model.to(device)


LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def add_lora(model, rank: int, layers: int = 0) -> None:
    """LoRA adapters (alpha = 2 x rank) in place on every projection of the top `layers` decoder layers (0: all);
    every other weight frozen."""
    from peft import LoraConfig, inject_adapter_in_model

    n = model.config.num_hidden_layers
    top = list(range(n - min(layers or n, n), n))
    for p in model.parameters():
        p.requires_grad_(False)
    inject_adapter_in_model(LoraConfig(r=rank, lora_alpha=2 * rank, lora_dropout=0.0, target_modules=LORA_TARGETS,
                                       layers_to_transform=top, layers_pattern="layers"), model)


def merged_weights(model, weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """`weights` (the model's state dict) with every LoRA adapter folded into its base weight under the plain
    module's key, so the checkpoint loads as an ordinary HF model; unchanged when the model has no adapters."""
    try:
        from peft.tuners.lora import LoraLayer
    except ImportError:  # no peft installed: no model here can hold adapters
        return weights
    out = dict(weights)
    for name, module in model.named_modules():
        if not isinstance(module, LoraLayer):
            continue
        for key in [k for k in out if k.startswith(f"{name}.lora_")]:
            del out[key]
        for part in ("weight", "bias"):
            if f"{name}.base_layer.{part}" in out:
                out[f"{name}.{part}"] = out.pop(f"{name}.base_layer.{part}")
        delta = sum(module.get_delta_weight(a) for a in module.active_adapters)
        out[f"{name}.weight"] = out[f"{name}.weight"] + delta.detach().to(out[f"{name}.weight"])
    return out


def add_dropout(model, p: float) -> None:
    """Dropout on the token embeddings (a forward hook, active only in train mode) and in attention.

    Llama has no hidden dropout of its own; SASRec-style regularisation is what a small model trained from
    scratch on sparse histories needs. The hook is not saved; a loaded checkpoint keeps only `attention_dropout`
    in its config, which acts in train mode only.
    """
    model.config.attention_dropout = p
    for layer in model.model.layers:
        layer.self_attn.attention_dropout = p

    def embedding_dropout(module, args, output):
        return torch.nn.functional.dropout(output, p, module.training)

    model.get_input_embeddings().register_forward_hook(embedding_dropout)


def item_token_init(cfg: ModelConfig, tokenizer) -> dict[str, Any]:
    """What placed the item tokens, for the checkpoint manifest: `model.item_init` acts only on tokens the base
    lacks, so a model started from a checkpoint that has them (the discriminator from the generator) inherits
    them, whatever `item_init` says."""
    from transformers import AutoConfig

    from llm_i2i.llm.tokenizer import item_vocabulary

    base_vocab = 0
    if cfg.base_model is not None:
        base_vocab = AutoConfig.from_pretrained(resolve_base_model(cfg.base_model), trust_remote_code=False,
                                                local_files_only=True).vocab_size
    new = int((item_vocabulary(tokenizer)[1] >= base_vocab).sum())
    return {"new_item_tokens": new, "init": cfg.resolved_item_init if new else "inherited from model.base_model"}


@torch.no_grad()
def init_item_embeddings(model, tokenizer, items, first_new_token: int = 0) -> int:
    """Set each item token's input (and untied output) embedding to the mean of its title's token embeddings."""
    from llm_i2i.llm.tokenizer import item_token_ids

    item_ids = items.column("item_id").to_numpy().astype(np.int64)
    titles = items.column("title").to_pylist()
    tids = item_token_ids(tokenizer, item_ids)
    enc = tokenizer([t or "" for t in titles], add_special_tokens=False)["input_ids"]
    emb = model.get_input_embeddings().weight
    out = model.get_output_embeddings().weight if not model.config.tie_word_embeddings else None
    done = 0
    for tid, ids in zip(tids.tolist(), enc):
        ids = [i for i in ids if i < first_new_token or first_new_token == 0]
        if tid < first_new_token or not ids:
            continue
        idx = torch.tensor(ids)
        emb[tid] = emb[idx].mean(0)
        if out is not None:
            out[tid] = out[idx].mean(0)
        done += 1
    return done


def text_embeddings(texts: list[str], text_base: str, encoder: str = "token_mean",
                    device: torch.device | str = "cpu") -> np.ndarray:
    """(len(texts), base hidden) vector of each text under a pretrained base; 0 for empty text.

    `token_mean`: the mean of its input token embeddings; only the tokenizer and the embedding matrix are read, so
    12k item texts take seconds. `final_mean`: the mean of the base's final hidden states over the text's tokens,
    one forward pass per text (17-23 minutes for 12k texts under SmolLM2-135M on 2 CPU cores), so it is kept
    in this node's cache, keyed by the base's files and the texts."""
    if encoder == "final_mean":
        return encoded_texts(texts, text_base, device)
    if encoder != "token_mean":
        raise ValueError(f"text encoder must be token_mean|final_mean, got {encoder!r}")
    tok, weight = _token_embeddings(resolve_base_model(text_base))
    enc = tok(texts, add_special_tokens=False)["input_ids"]
    out = np.zeros((len(texts), weight.shape[1]), dtype=np.float32)
    for n, ids in enumerate(enc):
        if ids:
            out[n] = weight[ids].mean(0)
    return out


ENCODED_TEXTS_VERSION = 1  # bump when final_mean's pooling changes, so cached vectors are recomputed


def text_vector_cache_keep() -> int:
    """How many entries of `$LLM_I2I_CACHE/text_vectors` stay, most recently used first
    (`$LLM_I2I_TEXT_VECTOR_CACHE_KEEP`, default 4): each is (items x base hidden) float32, 27 MB for Beauty's 12k
    items under SmolLM2 but 16 GB for a million items under a 4096-wide base."""
    raw = os.environ.get("LLM_I2I_TEXT_VECTOR_CACHE_KEEP", "4")
    if not raw.strip().isdigit() or int(raw) < 1:
        raise ValueError(f"environment variable LLM_I2I_TEXT_VECTOR_CACHE_KEEP must be an integer >= 1, got {raw!r}")
    return int(raw)


def encoded_texts(texts: list[str], text_base: str, device: torch.device | str = "cpu",
                  batch_size: int = 64) -> np.ndarray:
    """`final_mean` vectors of `texts`, from this node's cache or computed once (one process per node computes,
    the others wait for it: every SFT worker builds the model). The key covers the base's weight files by
    content, the texts and the pooling, so new text or another base never reads old vectors."""
    from llm_i2i.io import locked_build, prune_least_recent
    from llm_i2i.llm.bases import file_sha256
    from llm_i2i.uri import cache_root

    keep = text_vector_cache_keep()  # a bad setting fails before minutes of encoding, not after
    base = resolve_base_model(text_base)
    key = {"version": ENCODED_TEXTS_VERSION, "pooling": "final_mean", "texts": texts,
           "base": {p.name: file_sha256(p) for p in sorted(base.glob("*.safetensors"))}}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()
    out = cache_root() / "text_vectors" / digest[:24]

    def current(d: Path) -> bool:
        try:
            return np.load(d / "vectors.npy", allow_pickle=False).shape[0] == len(texts)
        except (OSError, ValueError):
            return False

    def encode(tmp: Path) -> None:
        vectors = forward_text_vectors(texts, base, device, batch_size)["final_mean"]
        np.save(tmp / "vectors.npy", vectors, allow_pickle=False)
        (tmp / "manifest.json").write_text(json.dumps({"base": str(base), "texts": len(texts),
                                                       "pooling": "final_mean", "key": digest}) + "\n")

    vectors = np.load(locked_build(out, current, encode, lock="encode") / "vectors.npy", allow_pickle=False)
    for gone in prune_least_recent(out, keep, lock="encode"):
        log.info(f"text vector cache: removed {gone.name}, least recently used beyond the newest {keep}")
    return vectors


@torch.no_grad()
def forward_text_vectors(texts: list[str], base: Path, device: torch.device | str = "cpu",
                         batch_size: int = 64) -> dict[str, np.ndarray]:
    """{final_mean, final_last}: (len(texts), hidden) pooled final hidden states of one forward pass per text under
    the local checkpoint `base` (its mean over the text's tokens, and its last token's); 0 for empty text."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from llm_i2i.progress import Progress

    tok = AutoTokenizer.from_pretrained(str(base), trust_remote_code=False, local_files_only=True)
    body = AutoModelForCausalLM.from_pretrained(str(base), dtype=torch.float32, trust_remote_code=False,
                                                local_files_only=True).eval().model.to(device)
    enc = tok(texts, add_special_tokens=False)["input_ids"]
    width = body.config.hidden_size
    out = {k: np.zeros((len(texts), width), np.float32) for k in ("final_mean", "final_last")}
    order = np.array([n for n in np.argsort([len(e) for e in enc]) if enc[n]], dtype=np.int64)  # little padding
    progress = Progress(len(order), f"encode item texts ({base.name})", "texts")
    for start in range(0, len(order), batch_size):
        rows = order[start:start + batch_size]
        longest = max(len(enc[r]) for r in rows)
        ids = torch.full((len(rows), longest), tok.pad_token_id or 0)
        mask = torch.zeros((len(rows), longest), dtype=torch.long)
        for j, r in enumerate(rows):
            ids[j, :len(enc[r])], mask[j, :len(enc[r])] = torch.tensor(enc[r]), 1
        ids, mask = ids.to(device), mask.to(device)
        h = body(input_ids=ids, attention_mask=mask).last_hidden_state.float()
        lengths = mask.sum(1)
        out["final_mean"][rows] = ((h * mask[..., None]).sum(1) / lengths[:, None]).cpu().numpy()
        out["final_last"][rows] = h[torch.arange(len(rows), device=h.device), lengths - 1].cpu().numpy()
        progress.update(len(rows))
    progress.close()
    return out


@functools.lru_cache(maxsize=2)
def _token_embeddings(base: Path):
    """(tokenizer, input embedding matrix as float32 numpy) of a local checkpoint; read once per process."""
    from safetensors import safe_open
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(base), trust_remote_code=False, local_files_only=True)
    for shard in sorted(base.glob("*.safetensors")):
        with safe_open(str(shard), "pt") as f:
            key = next((k for k in f.keys() if k.endswith("embed_tokens.weight")), None)
            if key is not None:
                return tok, f.get_tensor(key).float().numpy()
    raise ValueError(f"{base}: no embed_tokens.weight in its safetensors")


@torch.no_grad()
def init_item_embeddings_from_text(model, tokenizer, items, text_base: str, first_new_token: int = 0,
                                   encoder: str = "token_mean", device: torch.device | str = "cpu") -> tuple[int, int]:
    """Place new item tokens by their text: the top `hidden_size` principal components of the pretrained base's
    vector of each item's text (`text_embeddings` with `encoder`), scaled to the model's init std.

    A scratch model learns an item only from the histories it appears in, so a rarely seen (long-tail) item stays
    near its random start; here it starts near items whose text reads alike. Tokens below `first_new_token` (a
    checkpoint's own, e.g. a generator's trained items under the discriminator) are kept, and so are the random
    rows of items without text. Returns (placed, new items without text)."""
    from llm_i2i.llm.tokenizer import item_texts, item_token_ids

    tids = item_token_ids(tokenizer, items.column("item_id").to_numpy().astype(np.int64))
    texts = item_texts(items)
    new = tids >= first_new_token
    placed = new & np.array([bool(t) for t in texts])
    if not placed.any():
        return 0, int(new.sum())
    vecs = text_embeddings([t for t, p in zip(texts, placed) if p], text_base, encoder, device).astype(np.float64)
    emb = model.get_input_embeddings().weight
    centred = vecs - vecs.mean(0)
    _, _, components = np.linalg.svd(centred, full_matrices=False)
    proj = centred @ components[: emb.shape[1]].T
    if proj.shape[1] < emb.shape[1]:  # fewer items or a narrower base than the model: the rest stays 0
        proj = np.pad(proj, ((0, 0), (0, emb.shape[1] - proj.shape[1])))
    proj *= model.config.initializer_range / max(proj.std(), 1e-12)
    rows, at = torch.as_tensor(proj, dtype=emb.dtype), torch.as_tensor(tids[placed])
    emb[at] = rows
    if not model.config.tie_word_embeddings:
        model.get_output_embeddings().weight[at] = rows
    return int(placed.sum()), int((new & ~placed).sum())


def save_checkpoint(model, tokenizer, out_dir: str | Path, manifest: dict[str, Any],
                    state_dict: dict[str, torch.Tensor] | None = None) -> Path:
    """HF safetensors + tokenizer + llm_i2i_manifest.json (role, item ids in token order, configs, metrics); atomic.

    `state_dict`: the weights to write when the model's own tensors are views of a shared buffer (DeepSpeed)."""
    from llm_i2i.io import _json_default
    from llm_i2i.llm.tokenizer import item_vocabulary

    item_ids, token_ids = item_vocabulary(tokenizer)
    full = {**manifest, "item_ids": item_ids.tolist(), "item_token_ids": token_ids.tolist()}
    with atomic_dir(out_dir) as tmp:
        model.save_pretrained(str(tmp), safe_serialization=True, state_dict=state_dict)
        tokenizer.save_pretrained(str(tmp))
        (tmp / MANIFEST).write_text(json.dumps(full, indent=1, default=_json_default) + "\n")
    return Path(out_dir)


def load_checkpoint(path: str | Path, dtype: str | None = None, device: str | None = None):
    """(model in eval mode, tokenizer, manifest) from a local checkpoint dir; never runs remote code."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(path)
    if not (path / MANIFEST).exists():
        raise FileNotFoundError(f"{path}: not an llm-i2i checkpoint (no {MANIFEST})")
    manifest = json.loads((path / MANIFEST).read_text())
    kw: dict[str, Any] = {"trust_remote_code": False, "local_files_only": True}
    if dtype:
        kw["dtype"] = getattr(torch, dtype)
    model = AutoModelForCausalLM.from_pretrained(str(path), **kw)
    tokenizer = AutoTokenizer.from_pretrained(str(path), trust_remote_code=False, local_files_only=True)
    tokenizer.padding_side = "right"
    if device:
        model.to(device)
    model.eval()
    return model, tokenizer, manifest
