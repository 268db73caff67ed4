"""gen_tokenizer.py OUTDIR: expected CLIP BPE ids for tests/test_tokenizer.c.

A Python copy of openai/CLIP clip/simple_tokenizer.py written from the reference facts
(clip_mlm_and_c_peers.md A.6) with ftfy.fix_text left out (not installed, and dinoc does not do it
either): html.unescape twice, strip, regex \\s+ -> ' ', strip, str.lower(), the regex pattern with
IGNORECASE, byte symbols with '</w>' on the last, BPE by merge rank. Reads the repository's
data/bpe_simple_vocab_16e6.txt.gz.

Writes OUTDIR/tokenizer/hf/{vocab.json,merges.txt} (the same vocabulary in Hugging Face's layout)
and OUTDIR/tokenizer/cases.txt, one case per line:  label TAB hex(UTF-8 text) TAB ids
(space-separated BPE ids without start/end tokens). Cases: the A.6 vectors, hand-written edge cases
(digits, HTML entities, non-ASCII letters, mixed case, long words, empty and whitespace-only text,
final sigma, U+0130, U+0345, long s), 400 random strings over a pool of tricky characters (fixed
seed), and 3000 fortunes (/usr/share/games/fortunes/*, every entry of every file, in sorted file
order, first 3000 that are valid UTF-8).
"""
import glob
import gzip
import html
import json
import os
import random
import sys
import unicodedata

import regex

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..')
VOCAB = os.path.join(ROOT, 'data', 'bpe_simple_vocab_16e6.txt.gz')


def bytes_to_unicode():
    bs = list(range(ord('!'), ord('~') + 1)) + list(range(ord('¡'), ord('¬') + 1)) + \
        list(range(ord('®'), ord('ÿ') + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


class Tokenizer:
    def __init__(self, path):
        self.byte_encoder = bytes_to_unicode()
        merges = gzip.open(path).read().decode('utf-8').split('\n')
        merges = [tuple(m.split()) for m in merges[1:49152 - 256 - 2 + 1]]
        vocab = list(self.byte_encoder.values())
        vocab = vocab + [v + '</w>' for v in vocab]
        vocab += [''.join(m) for m in merges]
        vocab += ['<|startoftext|>', '<|endoftext|>']
        self.encoder = dict(zip(vocab, range(len(vocab))))
        self.ranks = dict(zip(merges, range(len(merges))))
        self.cache = {'<|startoftext|>': '<|startoftext|>', '<|endoftext|>': '<|endoftext|>'}
        self.pat = regex.compile(r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|"""
                                 r"""[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""", regex.IGNORECASE)

    def bpe(self, token):
        if token in self.cache:
            return self.cache[token]
        word = tuple(token[:-1]) + (token[-1] + '</w>',)
        while len(word) > 1:
            pairs = set(zip(word, word[1:]))
            best = min(pairs, key=lambda p: self.ranks.get(p, float('inf')))
            if best not in self.ranks:
                break
            first, second = best
            out, i = [], 0
            while i < len(word):  # every occurrence, left to right
                if i < len(word) - 1 and word[i] == first and word[i + 1] == second:
                    out.append(first + second)
                    i += 2
                else:
                    out.append(word[i])
                    i += 1
            word = tuple(out)
        res = ' '.join(word)
        self.cache[token] = res
        return res

    def encode(self, text):
        text = html.unescape(html.unescape(text)).strip()   # basic_clean without ftfy
        text = regex.sub(r'\s+', ' ', text).strip().lower()  # whitespace_clean, then lower
        ids = []
        for piece in self.pat.findall(text):
            piece = ''.join(self.byte_encoder[b] for b in piece.encode('utf-8'))
            ids.extend(self.encoder[t] for t in self.bpe(piece).split(' '))
        return ids


A6 = ['a diagram', 'a dog', 'a cat', 'hello world', 'Hello, World!!', 'a photo of a cat',
      'a dog jumping', 'an illustration', '2025', 'this is a test string of text', 'my',
      "it's a photo of the big dog's toy.", 'corazón', '  multiple   spaces\tand\nnewlines  ',
      '&amp; html', '<|startoftext|>a<|endoftext|>']

EDGE = ['', ' ', '\t\n \r\x0b\x0c', '\xa0\u2003\u3000', '\x1c\x1d', 'a\x1cb', 'a \x1c b', '\x85x\u2028y',
        '0', '3.14159', '1,000,000', '12abc34', 'x²+y³', '٣٤٥', 'Ⅻ', '½', '१२३',
        '&amp;', '&amp', '&lt;tag&gt;', '&amp;amp;', '&#65;&#x42;&#X43;', '&#0;', '&#128;', '&#x110000;',
        '&#xD800;', '&#1;x', '&#', '&#x;', '&notin;', '&notit;', '&nGt;', '&AMP;', '&Amp;', '&zzz;',
        '& amp;', '&ampx', '&' + 'a' * 40 + ';', 'AT&T', 'Q&A', '&&&', '&#9;tab',
        'corazón', 'Ñandú', 'Straße', 'ẞIG', 'Ελληνικά', 'ΟΔΥΣΣΕΥΣ', 'Σ', 'ΑΣ', 'ΑΣ.', 'Α\'Σ\'', 'ΑΣΑ',
        'ΑΣ\u0345', 'Σ\u0345Α', 'İstanbul', 'DİYARBAKIR', 'ﬁne', 'Ａｂｃ', 'Москва', '日本語のテキスト',
        '한국어', 'עברית', 'العربية', 'हिन्दी', '😀 emoji 👍🏽', 'e\u0301', 'a\u0345b', '\u0345',
        "'ſ", "it'ſ", '<|ſtartoftext|>', '<|STARTOFTEXT|>', '<|EndOfText|>', 'x<|endoftext|>y', '!<|endoftext|>',
        '<|startoftext', "''s", "I'M", "WE'LL", "you're", "'", "'''", 'HeLLo WoRLD', 'MiXeD CaSe',
        'CamelCaseIdentifier', 'a' * 300, 'pneumonoultramicroscopicsilicovolcanoconiosis',
        'supercalifragilisticexpialidocious' * 5, '-' * 100, '\x00', 'a\x00b', '\u200b\ufeff', 'ǅ',
        'K', 'Å', '\u0130\u0307', 'ΣΣ', 'A.Σ', "a photo of a 'cat'", 'http://example.com/a?b=c&d=e']

POOL = (list('abcXYZ019 \t\n&;#\'.,!?<|>-_') + ['&amp;', '&lt', '&#x41;', '&#66', '&nGt;', "'s", "'ll",
        '<|startoftext|>', '<|endoftext|>', 'Σ', 'ΑΣ', '\u0345', 'ſ', 'İ', 'K', 'ß', 'é', 'e\u0301', '\xa0',
        '\x1c', '\x85', '\u2028', '\u200b', '٣', '²', 'Ⅻ', '日本', '😀', 'Ａ', '\u00b7', 'ǅ', '\x00'])


def random_cp(rng):
    while True:
        cp = rng.randrange(0x110000) if rng.random() < 0.5 else rng.randrange(0x3000)
        if 0xD800 <= cp <= 0xDFFF:
            continue
        if unicodedata.category(chr(cp)) != 'Cn':  # unassigned in 14.0 may be assigned in regex's tables
            return chr(cp)


def random_cases(n, seed=1234):
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        parts = [rng.choice(POOL) if rng.random() < 0.8 else random_cp(rng) for _ in range(rng.randrange(1, 25))]
        out.append(''.join(parts))
    return out


def fortunes(limit):
    out = []
    for path in sorted(glob.glob('/usr/share/games/fortunes/*')):
        if path.endswith('.dat') or path.endswith('.u8') or os.path.isdir(path):
            continue
        try:
            text = open(path, 'rb').read().decode('utf-8')
        except (UnicodeDecodeError, OSError):
            continue
        for entry in text.split('\n%\n'):
            out.append(entry)
            if len(out) >= limit:
                return out
    return out


def main():
    outdir = os.path.join(sys.argv[1], 'tokenizer')
    os.makedirs(outdir, exist_ok=True)
    tok = Tokenizer(VOCAB)
    cases = [('a6:%d' % i, t) for i, t in enumerate(A6)]
    cases += [('edge:%d' % i, t) for i, t in enumerate(EDGE)]
    cases += [('random:%d' % i, t) for i, t in enumerate(random_cases(400))]
    fz = fortunes(3000)
    if not fz:
        raise SystemExit('gen_tokenizer.py: no fortunes under /usr/share/games/fortunes (apt install fortunes)')
    cases += [('fortune:%d' % i, t) for i, t in enumerate(fz)]
    # the same vocabulary in Hugging Face's layout (vocab.json + merges.txt), for the HF loader
    hf = os.path.join(outdir, 'hf')
    os.makedirs(hf, exist_ok=True)
    with open(os.path.join(hf, 'vocab.json'), 'w', encoding='utf-8') as f:
        json.dump(tok.encoder, f, ensure_ascii=False)
    lines = gzip.open(VOCAB).read().decode('utf-8').split('\n')[:49152 - 256 - 2 + 1]
    with open(os.path.join(hf, 'merges.txt'), 'w', encoding='utf-8') as f:
        f.write('#version: 0.2\n' + '\n'.join(lines[1:]) + '\n')
    with open(os.path.join(outdir, 'cases.txt'), 'w') as f:
        for label, text in cases:
            ids = tok.encode(text)
            f.write('%s\t%s\t%s\n' % (label, text.encode('utf-8').hex(), ' '.join(map(str, ids))))
    print('gen_tokenizer.py: %d cases (%d fortunes) -> %s' % (len(cases), len(fz), outdir))


if __name__ == '__main__':
    main()
