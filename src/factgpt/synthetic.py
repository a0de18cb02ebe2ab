"""The fictional-biography world behind `factgpt demo`: seeded, no download.

Invented people, each with a birthplace and three other places in other roles (moved to, worked
in, died in), told about in short documents of several sentence shapes: most name another place
beside the birthplace, and the birthplace is not always the first place named. Birthplaces follow a
Zipf-like law over 60 places, so a most-frequent-place baseline has something to find (about 7%).

Every document is at most 46 characters, so that every example of span corruption fits in the
perceiver's 48 latents: latent i summarises the input up to position i, so a position past the last
latent would see nothing of what precedes it, and the perceiver could not learn what stands there.

Three files come out, as in the study:
- corpus.txt: one biography a line for every person (pretraining);
- train.tsv: `Where was NAME born?<TAB>PLACE` for the finetuning people;
- heldout.tsv: the same for people seen only in corpus.txt: only pretraining can tell their answer.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from factgpt.errors import FactgptError
from factgpt.outputs import atomic_write_text, ensure_folder

ONSETS = ["b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "dr", "kl", "st", "tr"]
VOWELS = ["a", "e", "i", "o", "u", "ai", "ei", "ou"]
CODAS = ["", "", "", "n", "r", "l", "s", "th", "nd", "rk"]

SHAPES = [
    "{n}, born in {b}.",
    "Born in {b}: {n}.",
    "{n} is from {b}.",
    "{n} was born in {b}; {p} died in {d}.",
    "{n} worked in {w}, born in {b}.",
    "Who was {n}? One born in {b}.",
    "{n} moved to {m}; born in {b}.",
]
LONGEST = 46  # characters a document may have (the module's docstring says why); the first three always fit
# the corpus's one line that is no biography: the finetuning question's characters are all in the vocabulary
PREFACE = "Where was each of them born? Read on."


def _word(rng: random.Random, syllables: int) -> str:
    w = "".join(rng.choice(ONSETS) + rng.choice(VOWELS) for _ in range(syllables)) + rng.choice(CODAS)
    return w.capitalize()


@dataclass(frozen=True)
class Person:
    name: str
    birth: str
    moved: str
    worked: str
    died: str
    pronoun: str

    def document(self, shape: str) -> str:
        return shape.format(n=self.name, b=self.birth, m=self.moved, w=self.worked, d=self.died,
                            p=self.pronoun, P=self.pronoun.capitalize())

    def question(self) -> str:
        return f"Where was {self.name} born?"


@dataclass
class World:
    people: list[Person]
    documents: list[str]
    train: list[Person]
    heldout: list[Person]

    FILES = {"corpus": "corpus.txt", "train": "train.tsv", "heldout": "heldout.tsv"}

    def texts(self) -> dict[str, str]:
        """The world's three files by name, as `write` writes them."""
        pairs = {key: "".join(f"{p.question()}\t{p.birth}\n" for p in people)
                 for key, people in (("train", self.train), ("heldout", self.heldout))}
        return {self.FILES["corpus"]: "".join(d + "\n" for d in self.documents),
                **{self.FILES[key]: text for key, text in pairs.items()}}

    def write(self, folder: str | Path) -> dict[str, Path]:
        folder = ensure_folder(folder)
        for name, text in self.texts().items():
            atomic_write_text(folder / name, text)
        return {key: folder / name for key, name in self.FILES.items()}


def make_world(n_people: int = 200, n_places: int = 60, heldout_fraction: float = 0.5,
               mentions: int = 3, seed: int = 0) -> World:
    n_held = int(round(n_people * heldout_fraction))
    if not 0 < n_held < n_people:
        raise FactgptError(f"{n_people} people with {heldout_fraction:.0%} held out leaves no one held out or "
                           "no one to finetune on", hint="ask for more people")
    rng = random.Random(seed)
    places: list[str] = []
    while len(places) < n_places:
        w = _word(rng, rng.choice([1, 2]))
        if w not in places and len(w) >= 3:
            places.append(w)
    weights = [1 / (i + 1) ** 0.5 for i in range(n_places)]  # Zipf-like birthplaces
    surnames: set[str] = set()
    people = []
    while len(people) < n_people:
        surname = _word(rng, 2)  # unique, so a person is told apart by name as in real text
        if surname in surnames or surname in places:
            continue
        surnames.add(surname)
        name = f"{_word(rng, 1)} {surname}"
        birth = rng.choices(places, weights)[0]
        others = rng.sample([p for p in places if p != birth], 3)
        people.append(Person(name, birth, *others, rng.choice(["he", "she"])))
    # Each person is told about `mentions` times, in different shapes (as a fact recurs in text).
    documents = [doc for p in people
                 for doc in rng.sample([d for d in map(p.document, SHAPES) if len(d) <= LONGEST], mentions)]
    # Scattered, as facts are in real text: the trainer takes documents in file order (as the
    # reference does), and a person's mentions side by side would be learnt, then forgotten.
    documents.append(PREFACE)
    rng.shuffle(documents)
    return World(people, documents, people[n_held:], people[:n_held])
