"""Tokenizers of the embedded suite: the word-level one of the shipped tiny models, and the suite tokenizer.

`build_tokenizer()`: word-level, for the short synthetic suite (`dllm.eval.tasks.synthetic`, after ParallelBench,
arXiv 2510.04767), which the shipped tiny-sdar / tiny-llada keep (their tokenizer.json is this one).

Every space-separated word of the suite is exactly one token: a two-digit list item "07", a single digit "7"
(addition operands are written digit by digit, "1 2 3 4 + 5 6 7 =", and list indices are one digit), a task
word ("reverse") or a symbol (":", "=", "+"). "07" and "7" are different tokens, so items and digits never
collide. Fixed ids, specials first:

    0 <|pad|>   1 <|mask|>   2 <|endoftext|> (EOS)   3 <|unk|>   4.. synthetic.WORDS in order (127 tokens in all)

No decoder is set: `tokenizers` then joins tokens with single spaces, so decode(encode(text)) == text for the
suite's canonical single-spaced text. There is no BOS and no chat template: prompts are chat-free.

`build_suite_tokenizer()`: one tokenizer for the whole embedded suite, short and long tasks (`synthetic`,
`gsm_synth`, `mbpp_synth`), for new models. Byte-level BPE (GPT-2's byte-to-unicode pre-tokenizer and decoder,
so decode(encode(text)) == text exactly for any text, newlines and indentation included), with every digit
split off as its own token first (`Digits(individual_digits=True)`): numbers are read and written digit by
digit, as in LLaMA's tokenizer, so arithmetic has one token per digit and no number is a merge of its own.
"07" is two tokens. Same special ids 0..3 as above. The merges are learnt by `tokenizers`' BPE trainer
(SUITE_VOCAB_SIZE tokens in all) from a fixed, seeded corpus of TRAIN-split examples only, so the tokenizer is
the same on every build and has seen no test prompt.
"""
from __future__ import annotations

import json
import random
from functools import lru_cache
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from dllm.eval.tasks.programs import Programs
from dllm.eval.tasks.synthetic import WORDS, suite
from dllm.eval.tasks.wordproblems import MAX_STEPS, WordProblems

PAD, MASK, EOS, UNK = "<|pad|>", "<|mask|>", "<|endoftext|>", "<|unk|>"
SPECIALS: tuple[str, ...] = (PAD, MASK, EOS, UNK)
PAD_ID, MASK_ID, EOS_ID, UNK_ID = range(len(SPECIALS))
SPECIAL_TOKENS_MAP = {"pad_token": PAD, "mask_token": MASK, "eos_token": EOS, "unk_token": UNK}
SUITE_VOCAB_SIZE = 768       # measured on samples: 1000 shortens answers by < 1%, 400 lengthens them by 20-45%
CORPUS_DRAWS = {"synthetic": 200, "long": 2000}  # training pairs per short task, per long task


def build_tokenizer() -> Tokenizer:
    vocab = {w: i for i, w in enumerate(SPECIALS + WORDS)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token=UNK))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    # Registering the specials makes `skip_special_tokens=True` drop them when decoding (e.g. EOS and pad).
    tok.add_special_tokens(list(SPECIALS))
    return tok


def suite_corpus() -> list[str]:
    """The suite tokenizer's training text: prompts and answers of TRAIN-split draws from a fixed seed, every
    short task at its default knobs and both long tasks at their widest default-compatible ones (5 steps,
    grammar depth 0-2)."""
    rng = random.Random("suite-tokenizer/0")
    tasks = [(t, CORPUS_DRAWS["synthetic"]) for t in suite("train")]
    tasks += [(WordProblems("train", max_steps=MAX_STEPS), CORPUS_DRAWS["long"]),
              (Programs("train", min_depth=0), CORPUS_DRAWS["long"])]
    return [text for task, k in tasks for _ in range(k) for text in task.sample(rng)]


@lru_cache(maxsize=1)
def _suite_json() -> str:
    tok = Tokenizer(models.BPE(unk_token=UNK))
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                                 pre_tokenizers.ByteLevel(add_prefix_space=False)])
    tok.decoder = decoders.ByteLevel()
    # the whole byte alphabet: any text encodes without <|unk|>, not only the corpus's characters
    trainer = trainers.BpeTrainer(vocab_size=SUITE_VOCAB_SIZE, special_tokens=list(SPECIALS),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(suite_corpus(), trainer)
    return tok.to_str()


def build_suite_tokenizer() -> Tokenizer:
    """The suite tokenizer (see the module docstring); trained once per process (~1 s), then copied."""
    return Tokenizer.from_str(_suite_json())


TOKENIZERS = {"words": build_tokenizer, "suite": build_suite_tokenizer}


def save_tokenizer(folder: str | Path, kind: str = "words") -> Path:
    """Write a folder that `transformers.AutoTokenizer.from_pretrained` loads (4.x and 5.x); `kind` is a key of
    TOKENIZERS ("words": the shipped tiny models' tokenizer, "suite": the one for the whole embedded suite)."""
    if kind not in TOKENIZERS:
        raise ValueError(f"unknown tokenizer kind {kind!r}; choose from {sorted(TOKENIZERS)}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    TOKENIZERS[kind]().save(str(folder / "tokenizer.json"))
    config = {
        # The generic fast class loads tokenizer.json as is; 5.x maps the name to its TokenizersBackend.
        "tokenizer_class": "PreTrainedTokenizerFast",
        # Decoding must not rewrite spacing: the text is already canonical (and code's spacing is significant).
        "clean_up_tokenization_spaces": False,
        **SPECIAL_TOKENS_MAP,
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")
    (folder / "special_tokens_map.json").write_text(json.dumps(SPECIAL_TOKENS_MAP, indent=2) + "\n")
    return folder
