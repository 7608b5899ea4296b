"""lm-evaluation-harness model `dllm`: any lm-eval generation task, decoded by any dllm sampler.

    pip install "dllm[lmeval]"
    python -m dllm.eval.lm_eval_adapter --model dllm --tasks gsm8k --num_fewshot 5 --batch_size 16 \
        --model_args pretrained=GSAI-ML/LLaDA-8B-Instruct,sampler=threshold,threshold=0.9,gen_length=256,block_length=32
    python -m dllm.eval.lm_eval_adapter --model dllm --model_args pretrained=my_ckpt,sampler=freedave,draft_steps=4 \
        --tasks my_task --include_path my_tasks/ --limit 20 --apply_chat_template
The module runs lm-eval's own command line after registering the model (lm-eval 0.4 finds models only through
its registry, so plain `lm_eval --model dllm` cannot see it). In Python, import this module, then call
`lm_eval.simple_evaluate(model="dllm", model_args={...}, tasks=[...])`.

model_args: `pretrained` (a folder, a hub id or a shipped name), `sampler` (a configs/sampler name), `gen_length`,
`block_length`, `cache`, `refresh_every`, `dtype`, `device`, `chat_template` (wrap each context as one user turn;
or use lm-eval's `--apply_chat_template`, not both), `seed`, `batch_size`. Every other argument sets a field of the
sampler config: `threshold=0.8`, or `sampler.threshold=0.8`, dotted for nested fields (`router.cost=2`).
Each request generates min(gen_length, max_gen_toks) tokens, rounded up to whole blocks, and is cut at its `until`
strings. Only `generate_until` requests are supported: a masked diffusion sampler produces text, not the
left-to-right log-likelihoods that multiple-choice and perplexity tasks score. One process (no data parallel).
"""
from __future__ import annotations

import logging

import torch
import yaml
from omegaconf import OmegaConf

import dllm
from dllm.cache import as_policy
from dllm.eval.compare import build_sampler, compatible, group_config
from dllm.eval.evaluate import cut_at_stops, encode
from dllm.eval.progress import progress

try:
    import lm_eval.models  # noqa: F401  (lm-eval's own models register lazily only into an empty registry)
    from lm_eval.api.model import LM
    from lm_eval.api.registry import register_model
except ImportError as e:
    raise ImportError("the lm-eval adapter needs lm-evaluation-harness: pip install 'dllm[lmeval]'") from e

log = logging.getLogger(__name__)
ADAPTER_ARGS = ("pretrained", "sampler", "gen_length", "block_length", "cache", "refresh_every", "dtype", "device",
                "chat_template", "seed", "batch_size")


def sampler_config(name: str, overrides: dict) -> dict:
    """configs/sampler/<name>.yaml as a plain dict with `overrides` ({dotted field: value}) applied."""
    cfg = OmegaConf.to_container(group_config("sampler", name), resolve=False)   # keeps ${gen_length}, ???
    for key, value in overrides.items():
        *parents, last = key.removeprefix("sampler.").split(".")
        node = cfg
        for p in parents:
            node = node.get(p) if isinstance(node.get(p), dict) else None
            if node is None:
                break
        if node is None or last not in node or last == "_target_":
            raise ValueError(f"unknown model_arg {key!r}: neither an adapter argument {list(ADAPTER_ARGS)} nor a "
                             f"field of sampler {name!r} {field_names(cfg)}")
        old = node[last]
        # the CLI may hand values over as text; a numeric / boolean / null field gets a YAML scalar
        if isinstance(value, str) and (not isinstance(old, str) or old.startswith("${")):
            value = yaml.safe_load(value)
        node[last] = value
    return cfg


def field_names(cfg: dict, prefix: str = "") -> list[str]:
    out = []
    for k, v in cfg.items():
        if k != "_target_":
            out += field_names(v, f"{prefix}{k}.") if isinstance(v, dict) else [prefix + k]
    return out


def positive_int(name: str, value) -> int:
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        hint = " (dllm does not auto-tune the batch size: pass an integer)" if name == "batch_size" else ""
        raise ValueError(f"{name} must be a positive integer, got {value!r}{hint}")
    return value


@register_model("dllm")
class DLLM(LM):
    """lm-eval `LM` over `dllm.generate`: requests batched by generation length, longest prompts first."""

    def __init__(self, pretrained: str | None = None, sampler: str = "threshold", gen_length: int = 256,
                 block_length: int = 32, cache: str = "auto", refresh_every: int | None = None,
                 dtype: str | None = None, device: str | None = None, chat_template: bool = False, seed: int = 0,
                 batch_size: int | str = 16, **sampler_args):
        super().__init__()
        if not pretrained:
            raise ValueError("model_args must name a checkpoint: pretrained=<folder | hub id | shipped name>")
        self.gen_length = positive_int("gen_length", gen_length)
        self.block_length = positive_int("block_length", block_length)
        self.batch_size, self.seed = positive_int("batch_size", batch_size), int(seed)
        self.sampler_name, self.sampler_cfg = sampler, sampler_config(sampler, sampler_args)
        self.chat_template_on = bool(chat_template)
        self.pretrained = str(pretrained)
        if str(device or "").startswith("cuda") and not torch.cuda.is_available():
            # lm-eval's CLI passes device="cuda:0" unless told otherwise; its own HF model falls back the same way
            log.warning("device=%s requested but CUDA is not available: running on CPU", device)
            device = "cpu"
        self.model = dllm.load(pretrained, None if dtype == "auto" else dtype, device)
        self.tokenizer = dllm.load_tokenizer(pretrained)
        self._device = self.model.device
        m = self.model
        if m.block_causal and self.block_length % m.block_size:
            raise ValueError(f"block_length={self.block_length} must be a multiple of the model's block_size="
                             f"{m.block_size}")
        self.cache, self.refresh_every = cache, refresh_every
        as_policy(cache, refresh_every).resolve(m.cache_modes, m.default_cache, m.kind)   # a bad mode fails here
        self._samplers: dict[int, object] = {}
        if not compatible(self.sampler_for(self.gen_length), m):
            raise ValueError(f"sampler {sampler!r} needs a block-causal model; {self.pretrained} is bidirectional")
        self._warned_sampling = False

    def sampler_for(self, gen_length: int):
        """The sampler built for one generation length (configs may refer to ${gen_length})."""
        if gen_length not in self._samplers:
            self._samplers[gen_length] = build_sampler(OmegaConf.create(self.sampler_cfg), gen_length)
        return self._samplers[gen_length]

    def _tokens(self, context: str) -> list[int]:
        if self.chat_template_on:
            return encode(self.tokenizer, context, True)
        # lm-eval's --apply_chat_template renders the template, BOS included, into the context itself
        bos = self.tokenizer.bos_token
        ids = self.tokenizer(context, add_special_tokens=not (bos and context.startswith(bos))).input_ids
        if not ids:
            raise ValueError(f"context tokenizes to nothing: {context[:80]!r}")
        return ids

    def _request(self, gen_kwargs: dict) -> tuple[list[str], int]:
        """(until strings, generation length) of one request."""
        kw = dict(gen_kwargs or {})
        until = kw.pop("until", None) or []
        until = [until] if isinstance(until, str) else list(until)
        n = max(1, min(self.gen_length, int(kw.pop("max_gen_toks", self.gen_length))))
        if (kw.get("do_sample") or kw.get("temperature")) and not self._warned_sampling:
            log.warning("request asks for sampling (%s); dllm decodes with the sampler's own settings: set e.g. "
                        "temperature=... in model_args", kw)
            self._warned_sampling = True
        return until, -(-n // self.block_length) * self.block_length

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        jobs = []                                                       # (token ids, until, generation length)
        for req in requests:
            context, gen_kwargs = req.args
            jobs.append((self._tokens(context), *self._request(gen_kwargs)))
        # one generation length per batch; longest prompts first: less padding, and memory errors surface early
        order = sorted(range(len(jobs)), key=lambda i: (-jobs[i][2], -len(jobs[i][0])))
        batches, outputs = [], [""] * len(jobs)
        for i in order:
            if batches and len(batches[-1]) < self.batch_size and jobs[batches[-1][0]][2] == jobs[i][2]:
                batches[-1].append(i)
            else:
                batches.append([i])
        bar = progress(total=len(jobs), desc="dllm generate_until", disable=disable_tqdm or self.rank != 0)
        for batch in batches:
            n = jobs[batch[0]][2]
            out = dllm.generate(self.model, [jobs[i][0] for i in batch], self.sampler_for(n), gen_length=n,
                                block_length=self.block_length, cache=self.cache, refresh_every=self.refresh_every,
                                seed=self.seed)
            for i, seq in zip(batch, out.sequences):
                outputs[i] = cut_at_stops(self.tokenizer.decode(seq, skip_special_tokens=True), jobs[i][1])
                self.cache_hook.add_partial("generate_until", requests[i].args, outputs[i])
            bar.update(len(batch))
        bar.close()
        return outputs

    def _unsupported(self, kind: str):
        raise ValueError(f"the dllm model does not support {kind} requests: masked diffusion samplers generate text "
                         "and give no left-to-right log-likelihoods. Run generation tasks (output_type: "
                         "generate_until, e.g. gsm8k), not multiple-choice or perplexity tasks.")

    def loglikelihood(self, requests, disable_tqdm: bool = False):
        self._unsupported("loglikelihood")

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False):
        self._unsupported("loglikelihood_rolling")

    # chat templates through lm-eval's --apply_chat_template (few-shot turns rendered by lm-eval)
    def apply_chat_template(self, chat_history: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
        if self.chat_template_on:
            raise ValueError("chat_template=true in model_args and lm-eval's --apply_chat_template both wrap the "
                             "prompt in the chat template: use one of them")
        if not getattr(self.tokenizer, "chat_template", None):
            raise ValueError(f"--apply_chat_template: the tokenizer of {self.pretrained} has no chat template")
        return self.tokenizer.apply_chat_template(chat_history, tokenize=False,
                                                  add_generation_prompt=add_generation_prompt,
                                                  continue_final_message=not add_generation_prompt)

    @property
    def tokenizer_name(self) -> str:
        return self.pretrained.replace("/", "__")

    def chat_template(self, chat_template: bool | str = False) -> str | None:
        return (getattr(self.tokenizer, "chat_template", None) or "") if chat_template else None


def main() -> None:
    """lm-eval's own command line (`lm_eval ...` arguments), with the `dllm` model registered."""
    from lm_eval.__main__ import cli_evaluate

    from dllm.eval.cli_errors import report
    report(cli_evaluate)


if __name__ == "__main__":
    main()
