"""Biography text: who a question asks about, and the corpus's lines about them.

The corpus (wiki.txt, or the demo's corpus.txt) has one biography a line that opens with the
person's name; a question reads `Where was NAME born?`. The knowledge probe (factgpt.probe) and the
instruments (factgpt.lab) both read the text through these helpers.
"""

from __future__ import annotations

from factgpt.data import Question


def person_of(question: str) -> str:
    """NAME from `Where was NAME born?` (the question itself if it has another form)."""
    q = question.strip()
    if q.startswith("Where was ") and q.endswith(" born?"):
        return q[len("Where was "): -len(" born?")]
    return q


def biographies(pretrain_text: str) -> list[str]:
    """The corpus's documents: its non-empty lines."""
    return [ln for ln in pretrain_text.split("\n") if ln.strip()]


def own_documents(name: str, docs: list[str]) -> list[str]:
    """The documents about `name`: those that open with it."""
    return [d for d in docs if d.startswith(name)]


def document_name(line: str) -> str:
    """The name a biography line opens with: the text before its first '. ' (approximate)."""
    return line.split(". ", 1)[0].strip()


def birthplace_offsets(questions: list[Question], pretrain_text: str) -> list[int | None]:
    """Where the gold birthplace first occurs in the person's own document (character offset),
    or None where the person has no document or it does not name the place."""
    docs = biographies(pretrain_text)
    out = []
    for q in questions:
        own = own_documents(person_of(q.question), docs)
        at = own[0].find(q.answer) if own and q.answer else -1
        out.append(at if at >= 0 else None)
    return out
