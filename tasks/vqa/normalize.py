"""VQA answer normalisation, exactly as the official VQA v2 evaluation (``vqaEval.py``) does it.

The tables (punctuation, number words, articles, contractions) are the official data,
quirks included: the contraction keys with capitals ("Im", "Ive", "Id've") can never match
because words are lower-cased first, and "somebody'd" maps to "somebodyd".
"""

from __future__ import annotations

import re
from functools import lru_cache

# The 21 punctuation characters of vqaEval.py (no apostrophe, no colon; "." is handled apart).
PUNCT: tuple[str, ...] = (
    ";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-",
    ">", "<", "@", "`", ",", "?", "!",
)  # fmt: skip

# "(\d)(\,)(\d)": a digit-comma-digit anywhere makes *every* punctuation mark vanish.
COMMA_STRIP = re.compile(r"(\d)(,)(\d)")
# "(?!<=\d)(\.)(?!\d)": the first group is a negative *lookahead* for the text "<=" + digit
# (a mistyped lookbehind), which never fires before a ".", so every "." not followed by a
# digit is removed: "2.5" keeps its point, "2." and "a.b" lose theirs, ".5" keeps it.
PERIOD_STRIP = re.compile(r"(?!<=\d)(\.)(?!\d)")
# vqaEval.py calls ``periodStrip.sub("", text, re.UNICODE)``: the third positional argument of
# Pattern.sub is ``count``, and re.UNICODE == 32, so at most 32 periods are removed.
PERIOD_STRIP_COUNT = int(re.UNICODE)

MANUAL_MAP: dict[str, str] = {
    "none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4",
    "five": "5", "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10",
}  # fmt: skip

ARTICLES: frozenset[str] = frozenset({"a", "an", "the"})

CONTRACTIONS: dict[str, str] = {
    "aint": "ain't", "arent": "aren't", "cant": "can't", "couldve": "could've",
    "couldnt": "couldn't", "couldn'tve": "couldn't've", "couldnt've": "couldn't've",
    "didnt": "didn't", "doesnt": "doesn't", "dont": "don't", "hadnt": "hadn't",
    "hadnt've": "hadn't've", "hadn'tve": "hadn't've", "hasnt": "hasn't", "havent": "haven't",
    "hed": "he'd", "hed've": "he'd've", "he'dve": "he'd've", "hes": "he's", "howd": "how'd",
    "howll": "how'll", "hows": "how's", "Id've": "I'd've", "I'dve": "I'd've", "Im": "I'm",
    "Ive": "I've", "isnt": "isn't", "itd": "it'd", "itd've": "it'd've", "it'dve": "it'd've",
    "itll": "it'll", "let's": "let's", "maam": "ma'am", "mightnt": "mightn't",
    "mightnt've": "mightn't've", "mightn'tve": "mightn't've", "mightve": "might've",
    "mustnt": "mustn't", "mustve": "must've", "neednt": "needn't", "notve": "not've",
    "oclock": "o'clock", "oughtnt": "oughtn't", "ow's'at": "'ow's'at", "'ows'at": "'ow's'at",
    "'ow'sat": "'ow's'at", "shant": "shan't", "shed've": "she'd've", "she'dve": "she'd've",
    "she's": "she's", "shouldve": "should've", "shouldnt": "shouldn't",
    "shouldnt've": "shouldn't've", "shouldn'tve": "shouldn't've", "somebody'd": "somebodyd",
    "somebodyd've": "somebody'd've", "somebody'dve": "somebody'd've",
    "somebodyll": "somebody'll", "somebodys": "somebody's", "someoned": "someone'd",
    "someoned've": "someone'd've", "someone'dve": "someone'd've", "someonell": "someone'll",
    "someones": "someone's", "somethingd": "something'd", "somethingd've": "something'd've",
    "something'dve": "something'd've", "somethingll": "something'll", "thats": "that's",
    "thered": "there'd", "thered've": "there'd've", "there'dve": "there'd've",
    "therere": "there're", "theres": "there's", "theyd": "they'd", "theyd've": "they'd've",
    "they'dve": "they'd've", "theyll": "they'll", "theyre": "they're", "theyve": "they've",
    "twas": "'twas", "wasnt": "wasn't", "wed've": "we'd've", "we'dve": "we'd've",
    "weve": "we've", "werent": "weren't", "whatll": "what'll", "whatre": "what're",
    "whats": "what's", "whatve": "what've", "whens": "when's", "whered": "where'd",
    "wheres": "where's", "whereve": "where've", "whod": "who'd", "whod've": "who'd've",
    "who'dve": "who'd've", "wholl": "who'll", "whos": "who's", "whove": "who've",
    "whyll": "why'll", "whyre": "why're", "whys": "why's", "wont": "won't",
    "wouldve": "would've", "wouldnt": "wouldn't", "wouldnt've": "wouldn't've",
    "wouldn'tve": "wouldn't've", "yall": "y'all", "yall'll": "y'all'll", "y'allll": "y'all'll",
    "yall'd've": "y'all'd've", "y'alld've": "y'all'd've", "y'all'dve": "y'all'd've",
    "youd": "you'd", "youd've": "you'd've", "you'dve": "you'd've", "youll": "you'll",
    "youre": "you're", "youve": "you've",
}  # fmt: skip

_ANY_PUNCT = re.compile("[" + re.escape("".join(PUNCT)) + "]")


def clean_whitespace(text: str) -> str:
    """The clean-up vqaEval.py applies to every answer: newlines and tabs to spaces, then strip."""
    return text.replace("\n", " ").replace("\t", " ").strip()


def process_punctuation(text: str) -> str:
    """vqaEval.py ``processPunctuation``.

    Each punctuation mark is deleted when it touches a space in the *input* ("a, b") or when
    the input holds a digit-comma-digit ("1,000"); otherwise it becomes a space ("t-shirt" ->
    "t shirt"). Then up to 32 periods not followed by a digit are deleted.
    """
    out = text
    if _ANY_PUNCT.search(text) is not None:
        # The official loop tests the unchanged input and replaces each mark with "" or " ",
        # neither of which is a mark itself, so a per-character table gives the same result.
        strip_all = COMMA_STRIP.search(text) is not None
        table: dict[int, str] = {}
        for p in PUNCT:
            if p in text:
                touches_space = (p + " " in text) or (" " + p in text)
                table[ord(p)] = "" if (touches_space or strip_all) else " "
        out = text.translate(table)
    if "." in out:
        out = PERIOD_STRIP.sub("", out, count=PERIOD_STRIP_COUNT)
    return out


def process_digit_article(text: str) -> str:
    """vqaEval.py ``processDigitArticle``: lower-case, split on whitespace, number words to
    digits, drop articles, expand contractions, join with single spaces."""
    words = []
    for word in text.lower().split():
        word = MANUAL_MAP.get(word, word)
        if word not in ARTICLES:
            words.append(word)
    return " ".join(CONTRACTIONS.get(w, w) for w in words)


@lru_cache(maxsize=1 << 16)
def normalize_answer(text: str) -> str:
    """Full official normalisation (punctuation, then digits/articles/contractions).

    vqaEval.py applies it only to questions whose annotator answers are not all identical;
    see :func:`vlbench.tasks.vqa.scoring.score_vqa`. Whitespace clean-up is not included.
    """
    return process_digit_article(process_punctuation(text))


def preprocess_answer(text: str) -> str:
    """Answer key used for soft-score training targets (bottom-up-attention-vqa / LXMERT):
    the official normalisation followed by deleting every remaining comma."""
    return normalize_answer(text).replace(",", "")
