"""A word-level text tokenizer for the small default VLA, built offline from LIBERO's instructions.

The vocabulary is the prompt's words plus every word of the LIBERO-130 instructions (libero_spatial,
object, goal, 10 and 90), lower-cased, with unknown words mapped to ``[UNK]``. It is built with the
``tokenizers`` library and saved beside the checkpoint as ``tokenizer.json``, so a checkpoint always
reads instructions with the vocabulary it was trained with.
"""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

from tokenizers import Tokenizer
from tokenizers.models import WordLevel
from tokenizers.pre_tokenizers import Whitespace

PAD, BOS, EOS, IMAGE, UNK, PROPRIO = "[PAD]", "<s>", "</s>", "<image>", "[UNK]", "<proprio>"
SPECIALS = (PAD, BOS, EOS, IMAGE, UNK, PROPRIO)
# OpenVLA's prompt, lower-cased instruction inside.
PROMPT = "In: What action should the robot take to {instruction}?\nOut:"
TOKENIZER_FILE = "tokenizer.json"
VOCAB_SUITES = ("libero_spatial", "libero_object", "libero_goal", "libero_10", "libero_90")


def libero_instructions() -> list[str]:
    """The natural-language instructions of the LIBERO-130 tasks."""
    from libero.libero import benchmark

    out = []
    with contextlib.redirect_stdout(io.StringIO()):
        suites = benchmark.get_benchmark_dict()
        for name in VOCAB_SUITES:
            suite = suites[name]()
            out.extend(suite.get_task(i).language for i in range(suite.n_tasks))
    return out


def _words(text: str) -> list[str]:
    return re.findall(r"\w+|[^\w\s]", text.lower())


def build_text_tokenizer(texts: list[str], size: int) -> Tokenizer:
    """A WordLevel tokenizer over the words of ``texts`` and the prompt, padded to exactly ``size`` ids."""
    words = sorted({w for t in [PROMPT.format(instruction="x")] + texts for w in _words(t)})
    if len(SPECIALS) + len(words) > size:
        raise ValueError(f"text vocabulary needs {len(SPECIALS) + len(words)} ids but only {size} are available")
    vocab = {tok: i for i, tok in enumerate(SPECIALS)}
    for w in words:
        vocab[w] = len(vocab)
    for i in range(len(vocab), size):
        vocab[f"[unused{i}]"] = i
    tok = Tokenizer(WordLevel(vocab, unk_token=UNK))
    tok.pre_tokenizer = Whitespace()
    return tok


class TextTokenizer:
    """Encodes prompts as ``<s> <image>*P [<proprio>] prompt-words`` (image tokens after BOS, as in OpenVLA)."""

    def __init__(self, tokenizer: Tokenizer):
        self.tokenizer = tokenizer
        self.pad_id, self.bos_id, self.eos_id, self.image_id, self.unk_id, self.proprio_id = (
            tokenizer.token_to_id(t) for t in SPECIALS)

    @classmethod
    def for_libero(cls, size: int) -> "TextTokenizer":
        return cls(build_text_tokenizer(libero_instructions(), size))

    @property
    def size(self) -> int:
        return self.tokenizer.get_vocab_size()

    def encode_prompt(self, instruction: str, num_image_tokens: int, proprio: bool = False) -> list[int]:
        prompt = PROMPT.format(instruction=instruction.lower().strip().rstrip("."))
        ids = self.tokenizer.encode(prompt.lower()).ids
        return [self.bos_id] + [self.image_id] * num_image_tokens + [self.proprio_id] * proprio + ids

    def save(self, directory: str | Path) -> None:
        self.tokenizer.save(str(Path(directory) / TOKENIZER_FILE))

    @classmethod
    def load(cls, directory: str | Path) -> "TextTokenizer":
        return cls(Tokenizer.from_file(str(Path(directory) / TOKENIZER_FILE)))
