"""bpe.py - a CLIP-style byte-level BPE learned from our captions, and its tokenizer.

Same conventions as openai/CLIP simple_tokenizer.py, which the engine's tokenizer implements:
whitespace runs to one space, strip, lower-case, the CLIP pre-split regex, UTF-8 bytes through
bytes_to_unicode, "</w>" on a word's last symbol, merges applied by rank. Vocabulary order as in
CLIP: the 256 byte symbols, the same with "</w>", one entry per new merge result, then
<|startoftext|> and <|endoftext|>. Written as vocab.json + merges.txt ("#version: 0.2" first).

Learning: start from bytes; repeatedly merge the most frequent adjacent pair (ties: the
lexicographically smallest pair) until no pair occurs twice or max_merges is reached. Deterministic.

Not here: ftfy / HTML unescaping (our captions are plain ASCII), emphasis syntax.
"""
import json
import re
from collections import Counter

CTX = 77
SOT = "<|startoftext|>"
EOT = "<|endoftext|>"
# CLIP's pattern with \p{L} -> [^\W\d_] and \p{N} -> \d (identical on ASCII text).
PAT = re.compile(r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[^\W\d_]+|\d|(?:[^\s\w]|_)+""",
                 re.IGNORECASE)


def bytes_to_unicode():
    bs = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("\xa1"), ord("\xac") + 1)) +
          list(range(ord("\xae"), ord("\xff") + 1)))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


BYTE_ENC = bytes_to_unicode()


def clean(text):
    return re.sub(r"\s+", " ", text).strip().lower()


def words_of(text):
    out = []
    for tok in PAT.findall(clean(text)):
        out.append("".join(BYTE_ENC[b] for b in tok.encode("utf-8")))
    return out


def learn(texts, max_merges=2000):
    """Returns the merge list [(a, b), ...] in rank order."""
    freq = Counter()
    for t in texts:
        freq.update(words_of(t))
    words = {w: tuple(w[:-1]) + (w[-1] + "</w>",) for w in freq}
    merges = []
    while len(merges) < max_merges:
        pairs = Counter()
        for w, syms in words.items():
            for a, b in zip(syms, syms[1:]):
                pairs[(a, b)] += freq[w]
        if not pairs:
            break
        best = min(pairs.items(), key=lambda kv: (-kv[1], kv[0]))
        if best[1] < 2:
            break
        a, b = best[0]
        merges.append((a, b))
        for w, syms in words.items():
            out, i = [], 0
            while i < len(syms):
                if i + 1 < len(syms) and syms[i] == a and syms[i + 1] == b:
                    out.append(a + b)
                    i += 2
                else:
                    out.append(syms[i])
                    i += 1
            words[w] = tuple(out)
    return merges


class Tokenizer:
    def __init__(self, merges):
        self.merges = list(merges)
        byte_syms = list(BYTE_ENC.values())
        vocab = byte_syms + [s + "</w>" for s in byte_syms]
        seen = set(vocab)
        for a, b in self.merges:
            if a + b not in seen:
                vocab.append(a + b)
                seen.add(a + b)
        vocab += [SOT, EOT]
        self.encoder = {s: i for i, s in enumerate(vocab)}
        self.ranks = {m: i for i, m in enumerate(self.merges)}
        self.sot, self.eot = self.encoder[SOT], self.encoder[EOT]
        self.cache = {}

    def __len__(self):
        return len(self.encoder)

    def bpe(self, word):
        if word in self.cache:
            return self.cache[word]
        syms = list(word[:-1]) + [word[-1] + "</w>"]
        while len(syms) > 1:
            pairs = [(self.ranks.get((a, b), 1 << 30), i) for i, (a, b) in enumerate(zip(syms, syms[1:]))]
            rank, _ = min(pairs)
            if rank == 1 << 30:
                break
            a, b = self.merges[rank]
            out, i = [], 0
            while i < len(syms):
                if i + 1 < len(syms) and syms[i] == a and syms[i + 1] == b:
                    out.append(a + b)
                    i += 2
                else:
                    out.append(syms[i])
                    i += 1
            syms = out
        self.cache[word] = syms
        return syms

    def encode(self, text):
        ids = []
        for w in words_of(text):
            ids += [self.encoder[s] for s in self.bpe(w)]
        return ids

    def tokenize77(self, text):
        """[SOT] + first 75 ids + [EOT], padded with EOT (the SD1 convention)."""
        ids = [self.sot] + self.encode(text)[:CTX - 2] + [self.eot]
        return ids + [self.eot] * (CTX - len(ids))

    def save(self, folder):
        import os
        with open(os.path.join(folder, "vocab.json"), "w", encoding="utf-8") as f:
            json.dump(self.encoder, f, ensure_ascii=False)
        with open(os.path.join(folder, "merges.txt"), "w", encoding="utf-8") as f:
            f.write("#version: 0.2\n")
            for a, b in self.merges:
                f.write("%s %s\n" % (a, b))

    @classmethod
    def load(cls, folder):
        import os
        with open(os.path.join(folder, "merges.txt"), encoding="utf-8") as f:
            lines = f.read().split("\n")
        merges = [tuple(l.split(" ")) for l in lines[1:] if l]
        tok = cls(merges)
        with open(os.path.join(folder, "vocab.json"), encoding="utf-8") as f:
            if json.load(f) != tok.encoder:
                raise ValueError("%s: vocab.json does not match merges.txt" % folder)
        return tok


if __name__ == "__main__":
    import argparse
    import os
    p = argparse.ArgumentParser(description="Learn the BPE from a dataset's captions.")
    p.add_argument("--data", required=True, help="npz from dataset.py")
    p.add_argument("--out", required=True, help="folder for vocab.json + merges.txt")
    p.add_argument("--max-merges", type=int, default=2000)
    a = p.parse_args()
    import numpy as np
    caps = [str(c) for c in np.load(a.data)["captions"]]
    merges = learn(caps, a.max_merges)
    tok = Tokenizer(merges)
    os.makedirs(a.out, exist_ok=True)
    tok.save(a.out)
    n = max(len(tok.encode(c)) for c in caps)
    print("%d merges, vocabulary %d, longest caption %d tokens" % (len(merges), len(tok), n))
