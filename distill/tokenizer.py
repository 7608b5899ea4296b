"""Word-level tokenizer for the synthetic suite (`dllm.eval.tasks.synthetic`, after ParallelBench, arXiv 2510.04767).

Every space-separated word of the suite is exactly one token: a two-digit list item "07", a single digit "7"
(addition operands are written digit by digit, "1 2 3 4 + 5 6 7 =", and list indices are one digit), a task
word ("reverse") or a symbol (":", "=", "+"). "07" and "7" are different tokens, so items and digits never
collide. Fixed ids, specials first:

    0 <|pad|>   1 <|mask|>   2 <|endoftext|> (EOS)   3 <|unk|>   4.. synthetic.WORDS in order (127 tokens in all)

No decoder is set: `tokenizers` then joins tokens with single spaces, so decode(encode(text)) == text for the
suite's canonical single-spaced text. There is no BOS and no chat template: prompts are chat-free.
"""
from __future__ import annotations

import json
from pathlib import Path

from tokenizers import Tokenizer, models, pre_tokenizers

from dllm.eval.tasks.synthetic import WORDS

PAD, MASK, EOS, UNK = "<|pad|>", "<|mask|>", "<|endoftext|>", "<|unk|>"
SPECIALS: tuple[str, ...] = (PAD, MASK, EOS, UNK)
PAD_ID, MASK_ID, EOS_ID, UNK_ID = range(len(SPECIALS))
SPECIAL_TOKENS_MAP = {"pad_token": PAD, "mask_token": MASK, "eos_token": EOS, "unk_token": UNK}


def build_tokenizer() -> Tokenizer:
    vocab = {w: i for i, w in enumerate(SPECIALS + WORDS)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token=UNK))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    # Registering the specials makes `skip_special_tokens=True` drop them when decoding (e.g. EOS and pad).
    tok.add_special_tokens(list(SPECIALS))
    return tok


def save_tokenizer(folder: str | Path) -> Path:
    """Write a folder that `transformers.AutoTokenizer.from_pretrained` loads (4.x and 5.x)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    build_tokenizer().save(str(folder / "tokenizer.json"))
    config = {
        # The generic fast class loads tokenizer.json as is; 5.x maps the name to its TokenizersBackend.
        "tokenizer_class": "PreTrainedTokenizerFast",
        # Decoding must not rewrite spacing: the suite's text is already canonical.
        "clean_up_tokenization_spaces": False,
        **SPECIAL_TOKENS_MAP,
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")
    (folder / "special_tokens_map.json").write_text(json.dumps(SPECIAL_TOKENS_MAP, indent=2) + "\n")
    return folder
