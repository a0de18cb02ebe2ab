"""Text -> vocabulary -> datasets -> batches.

The vocabulary and both datasets follow the reference specification (CS224N a5 dataset.py) and
keep its names. Reading is strict: a file that is not UTF-8, a labelled line without a tab, a
character outside the vocabulary, each raise FactgptError naming the file and the line.

Every random draw of the span corruption comes from the dataset's own torch.Generator, three
uniforms per example, whether one example is drawn (__getitem__) or a whole batch (draw_batch):
torch's CPU generator gives the same stream either way, so the reference engine (a DataLoader
over __getitem__) and the fast engine (draw_batch) see exactly the same examples.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import Dataset

from factgpt.config import REFERENCE_CORRUPTION, Corruption
from factgpt.errors import FactgptError

PAD_CHAR = "\u25a1"  # □, id 0: padding, ignored by the loss
MASK_CHAR = "\u2047"  # ⁇, id 1: marks the removed span (pretraining) and the answer (finetuning)
PAD_ID, MASK_ID = 0, 1


# ----------------------------------------------------------------------------------------------
# reading files


def read_text(path: str | Path) -> str:
    """The whole file as text; a clear error for a missing file or bytes that are not UTF-8."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise FactgptError("no such file", path=path, hint="check the path") from None
    except IsADirectoryError:
        raise FactgptError("is a directory, not a file", path=path) from None
    except OSError as e:
        raise FactgptError(f"cannot read: {e.strerror}", path=path) from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise FactgptError(f"byte 0x{raw[e.start]:02x} is not valid UTF-8", path=path, line=line,
                           hint="save the file as UTF-8") from None


def split_lines(text: str) -> list[str]:
    """Lines without their ending (\\n or \\r\\n, or \\r\\r\\n from a file converted twice); a
    final newline does not start a new line."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [ln.rstrip("\r") for ln in lines]


def split_pair(line: str, path: str | Path | None, number: int) -> tuple[str, str]:
    """`question<TAB>answer` -> (question, answer); one clear error for no tab or several."""
    parts = line.split("\t")
    if len(parts) != 2:
        problem = ("line has no tab between question and answer" if len(parts) == 1
                   else f"line has {len(parts) - 1} tabs, expected one")
        raise FactgptError(problem, path=path, line=number, hint="expected `question<TAB>answer`")
    return parts[0], parts[1]


@dataclass(frozen=True)
class Question:
    question: str  # "Where was NAME born?"
    answer: str | None  # the gold place, or None in an unlabelled file
    line: int  # 1-based line number in its file


def read_questions(path: str | Path, *, require_answers: bool = False) -> list[Question]:
    """Read a birth-place TSV: `question<TAB>answer` a line, or bare questions (test inputs).

    A file is either labelled (every line has a tab) or not (no line has one); a mix is an
    error, as is an empty line or an empty file.
    """
    lines = split_lines(read_text(path))
    if not lines:
        raise FactgptError("the file is empty", path=path, hint="expected `question<TAB>answer` lines")
    labelled = "\t" in lines[0]
    if require_answers and not labelled:
        raise FactgptError("line has no tab between question and answer", path=path, line=1,
                           hint="expected `question<TAB>answer`")
    out = []
    for i, ln in enumerate(lines, start=1):
        if not ln.strip():
            raise FactgptError("empty line", path=path, line=i, hint="remove it")
        if labelled:
            q, a = split_pair(ln, path, i)
            if not q or not a:
                raise FactgptError("empty question or answer", path=path, line=i)
            out.append(Question(q, a.strip(), i))
        else:
            if "\t" in ln:
                raise FactgptError("line has a tab but the first line has none", path=path, line=i,
                                   hint="a file is either all `question<TAB>answer` or all questions")
            out.append(Question(ln, None, i))
    return out


# ----------------------------------------------------------------------------------------------
# vocabulary


class Vocab:
    """id 0 is PAD, id 1 is MASK, ids 2.. the sorted distinct characters of the corpus."""

    def __init__(self, chars: list[str]) -> None:
        self.itos: dict[int, str] = dict(enumerate(chars))
        self.stoi: dict[str, int] = {c: i for i, c in enumerate(chars)}

    @classmethod
    def from_text(cls, text: str, *, source: str | Path | None = None) -> Vocab:
        for special in (PAD_CHAR, MASK_CHAR):
            at = text.find(special)
            if at >= 0:
                raise FactgptError(f"the corpus contains the reserved character {special!r}",
                                   path=source, line=text.count("\n", 0, at) + 1,
                                   hint="PAD and MASK may not occur in the text")
        return cls([PAD_CHAR, MASK_CHAR, *sorted(set(text))])

    @property
    def chars(self) -> list[str]:
        return [self.itos[i] for i in range(len(self.itos))]

    def __len__(self) -> int:
        return len(self.itos)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocab) and self.itos == other.itos

    def encode(self, text: str, *, source: str | Path | None = None, line: int | None = None) -> list[int]:
        try:
            return [self.stoi[c] for c in text]
        except KeyError as e:
            raise FactgptError(f"character {e.args[0]!r} (U+{ord(e.args[0]):04X}) is not in the "
                               "vocabulary of the pretraining corpus", path=source, line=line,
                               hint="the vocabulary is every character of the pretraining corpus") from None

    def decode(self, ids) -> str:
        return "".join(self.itos[int(i)] for i in ids)


# ----------------------------------------------------------------------------------------------
# span-corruption pretraining (its parameters, Corruption, are in factgpt.config with the recipe)


class CharCorruptionDataset(Dataset):
    """Span corruption over the documents (lines) of a corpus.

    Item i: document i truncated to a random length L in [4, int(block_size*7/8)] (shorter
    documents stay whole), split into prefix + masked + suffix with a random masked length whose
    mean is a quarter of the truncated length, rearranged as ``prefix⁇suffix⁇masked`` and padded
    to block_size+1; x = s[:-1], y = s[1:]. An encoded pair, block_size 32 (□ is PAD), from the
    line truncated to its first 28 characters, with " Mouradian" masked:

        x: Khatchig⁇ is a jour⁇ Mouradian□□
        y: hatchig⁇ is a jour⁇ Mouradian□□□

    Documents are ``text.split('\\n')`` as in the reference, so a final newline yields one
    empty document (it trains only "⁇ follows ⁇") and len() matches the reference's, which
    sets final_tokens.
    """

    def __init__(self, text: str, block_size: int, *, source: str | Path | None = None,
                 seed: int = 0, corruption: Corruption = REFERENCE_CORRUPTION) -> None:
        self.vocab = Vocab.from_text(text, source=source)
        self.stoi, self.itos = self.vocab.stoi, self.vocab.itos
        self.vocab_size = len(self.vocab)
        self.block_size = block_size
        self.MASK_CHAR, self.PAD_CHAR = MASK_CHAR, PAD_CHAR
        self.data = text.split("\n")
        if not text.strip():
            raise FactgptError("the corpus is empty", path=source, hint="pretraining needs text")
        self.corruption = corruption
        self.max_len = int(block_size * 7 / 8)  # longest truncation the block allows (x, y: n + 2 ids)
        # settings outside the block's range are refused, not clamped: the records keep what was asked
        if corruption.max_truncation is not None:
            if not 1 <= corruption.max_truncation <= self.max_len:
                raise FactgptError(f"max_truncation {corruption.max_truncation} is outside 1-{self.max_len}, "
                                   f"what a block of {block_size} allows", hint=f"pass 1 to {self.max_len}")
            self.max_len = corruption.max_truncation
        if not 1 <= corruption.min_truncation <= self.max_len:
            raise FactgptError(f"min_truncation {corruption.min_truncation} is outside 1-{self.max_len} "
                               "(the longest truncation)", hint=f"pass 1 to {self.max_len}")
        if not 0 < corruption.mask_fraction <= 1:
            raise FactgptError(f"mask_fraction {corruption.mask_fraction:g} is outside (0, 1]",
                               hint="the reference's is 0.5")
        self.min_len = corruption.min_truncation
        # First max_len ids of every document, PAD-filled, so batches are built by indexing.
        self._lengths = torch.tensor([min(len(d), self.max_len) for d in self.data])
        self._tokens = torch.full((len(self.data), self.max_len), PAD_ID, dtype=torch.long)
        for i, d in enumerate(self.data):
            ids = [self.stoi[c] for c in d[: self.max_len]]
            self._tokens[i, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        self.generator = torch.Generator().manual_seed(seed)

    @property
    def seq_len(self) -> int:
        return self.block_size  # x and y: block_size ids each

    def reseed(self, seed: int) -> None:
        self.generator.manual_seed(seed)

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, idx: int) -> tuple[torch.Tensor, torch.Tensor]:
        u = torch.rand(1, 3, generator=self.generator, dtype=torch.float64)
        x, y = self.corrupt(torch.tensor([idx]), u)
        return x[0], y[0]

    def draw_batch(self, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The examples __getitem__ would give for `indices`, in order, in one vectorised step."""
        u = torch.rand(len(indices), 3, generator=self.generator, dtype=torch.float64)
        return self.corrupt(indices, u)

    def spans(self, indices: torch.Tensor, u: torch.Tensor):
        """Map three uniforms per example to (n, m, p): kept length, masked length, prefix length."""
        lo, hi = self.min_len, self.max_len
        trunc = lo + (u[:, 0] * (hi - lo + 1)).long()  # uniform over [lo, max_len] (reference: [4, 112])
        n = torch.minimum(trunc, self._lengths[indices])  # short documents stay whole
        # masked length uniform over [1, round(n*f) - 1] (at least 1); the reference's f = 1/2
        # gives a mean of round(n/2)/2 ~ n/4
        m_hi = torch.clamp(torch.round(n * self.corruption.mask_fraction).long() - 1, min=1)
        m = torch.minimum(1 + (u[:, 1] * m_hi).long(), n)
        p = (u[:, 2] * (n - m + 1)).long()  # prefix length, uniform over [0, n - m]
        return n, m, p

    def corrupt(self, indices: torch.Tensor, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n, m, p = self.spans(indices, u)
        n, m, p = n[:, None], m[:, None], p[:, None]  # (B, 1)
        j = torch.arange(self.block_size + 1)[None, :]  # output positions, (1, T+1)
        # Source position in the document for every output position of prefix⁇suffix⁇masked.
        first_mask = p
        second_mask = n - m + 1
        src = torch.where(j < first_mask, j,
              torch.where(j < second_mask, j - 1 + m,  # suffix: d[p+m:n]
                          j - second_mask - 1 + p))  # masked: d[p:p+m]
        src = src.clamp(0, self.max_len - 1)
        s = torch.gather(self._tokens[indices], 1, src)  # (B, T+1)
        s = torch.where((j == first_mask) | (j == second_mask), MASK_ID, s)
        s = torch.where(j >= n + 2, PAD_ID, s)
        return s[:, :-1].contiguous(), s[:, 1:].contiguous()


# ----------------------------------------------------------------------------------------------
# finetuning on questions


class NameDataset(Dataset):
    """Question/answer pairs with the pretraining dataset's vocabulary. An encoded pair:

        x: Where was Khatchig Mouradian born?⁇Lebanon⁇□□□□□...
        y: □□□□□□□□□□□□□□□□□□□□□□□□□□□□□□□□□⁇Lebanon⁇□□□□□□...

    x is ``question⁇answer⁇`` padded to block_size then cut by one (block_size-1 ids, as in the
    reference); y is the same shifted by one with PAD over the question, so only the answer is
    learnt. Unlike the reference, non-ASCII letters are kept ("Naïma", not "Nama") and the last
    line counts even without a trailing newline.
    """

    def __init__(self, pretraining_dataset: CharCorruptionDataset, text: str, *,
                 source: str | Path | None = None) -> None:
        self.vocab = pretraining_dataset.vocab
        self.stoi, self.itos = self.vocab.stoi, self.vocab.itos
        self.block_size = pretraining_dataset.block_size
        self.MASK_CHAR, self.PAD_CHAR = MASK_CHAR, PAD_CHAR
        self.data: list[str] = []
        xs, ys = [], []
        for i, ln in enumerate(split_lines(text), start=1):
            if not ln.strip():
                raise FactgptError("empty line", path=source, line=i, hint="remove it")
            inp, oup = split_pair(ln, source, i)
            if not inp or not oup:  # an empty question would also make y one id longer than x
                raise FactgptError("empty question or answer", path=source, line=i,
                                   hint="expected `question<TAB>answer`, both given")
            s = inp + MASK_CHAR + oup + MASK_CHAR
            if len(s) > self.block_size:
                raise FactgptError(f"question and answer take {len(s)} characters with the two "
                                   f"⁇, more than the block size {self.block_size}",
                                   path=source, line=i, hint="shorten the line")
            ids = self.vocab.encode(s, source=source, line=i)
            x = ids + [PAD_ID] * (self.block_size - len(ids))
            y = [PAD_ID] * (len(inp) - 1) + x[len(inp):]
            xs.append(x[:-1])
            ys.append(y)
            self.data.append(ln)
        if not self.data:
            raise FactgptError("the file has no question/answer lines", path=source)
        self._x = torch.tensor(xs, dtype=torch.long)
        self._y = torch.tensor(ys, dtype=torch.long)

    @property
    def seq_len(self) -> int:
        return self.block_size - 1  # the reference pads to block_size, then cuts x by one

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, idx: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self._x[idx], self._y[idx]

    def draw_batch(self, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self._x[indices], self._y[indices]


class MixedDataset(Dataset):
    """Span-corrupted documents with question/answer pairs mixed in, one pool of examples: index
    i < len(corpus) is document i, the rest are the pairs (padded to the corpus's row length, the
    loss on their answers only). An epoch shows every document and every pair once."""

    def __init__(self, corpus: CharCorruptionDataset, names: NameDataset) -> None:
        self.corpus, self.names = corpus, names
        self.generator = corpus.generator  # the corruption draws (saved in resume points)
        self.seq_len = corpus.seq_len

    def reseed(self, seed: int) -> None:
        self.corpus.reseed(seed)

    def __len__(self) -> int:
        return len(self.corpus) + len(self.names)

    def __getitem__(self, idx: int) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = self.draw_batch(torch.tensor([idx]))
        return x[0], y[0]

    def draw_batch(self, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        is_doc = indices < len(self.corpus)
        x = torch.full((len(indices), self.seq_len), PAD_ID, dtype=torch.long)
        y = torch.full_like(x, PAD_ID)
        x[is_doc], y[is_doc] = self.corpus.draw_batch(indices[is_doc])
        qx, qy = self.names.draw_batch(indices[~is_doc] - len(self.corpus))  # (b, block_size - 1)
        x[~is_doc, :qx.shape[1]], y[~is_doc, :qy.shape[1]] = qx, qy
        return x, y
