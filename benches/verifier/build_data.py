"""Builds the verifier's training pairs: the `train` rows of p402's hard
sets, GPTCache's paraphrases, and pairs made from questions by changing
one thing an answer depends on (WordNet antonyms, a negation, a number,
the question word, an added constraint, another entity, another word)."""
import csv, random, re, sys, json, hashlib
from pathlib import Path

R = random.Random(402)
repo = Path(sys.argv[1])
data = repo / "benches/data"
lex = repo / "src/cache/lexicon"

def rows(name):
    with open(data / name, newline="") as f:
        return list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))

hard = [dict(r, source=n) for n in ("cache_dev.tsv", "fow_cache_pairs.tsv") for r in rows(n)]
train_rows = [r for r in hard if r["split"] == "train"]
gpt = rows("gptcache_mock_pairs.tsv")
banking = [r["text"] for r in rows("banking77_test_queries.tsv")]

antonyms = {}
for line in open(lex / "antonyms.tsv"):
    if line.startswith("#") or not line.strip():
        continue
    a, b = line.split()[:2]
    antonyms.setdefault(a, []).append(b); antonyms.setdefault(b, []).append(a)
common = set()
for line in open(lex / "synonyms.txt"):
    if line.startswith("#"):
        continue
    common.update(line.split())
synonyms = {}
for line in open(lex / "synonyms.txt"):
    if line.startswith("#"):
        continue
    ws = [w for w in line.split() if "_" not in w]
    if len(ws) > 1:
        for w in ws:
            synonyms.setdefault(w, []).extend(x for x in ws if x != w)

STOP = set("a an the is are was were be to of in on for and or with how what why who when where which do does did i my me you your it this that can could should would will please tell explain".split())
out = []
def add(a, b, y, kind):
    if a.strip() == b.strip() and y == 0:
        return
    if R.random() < 0.5:
        a, b = b, a
    out.append((a, b, y, kind))

for r in train_rows:
    add(r["a"], r["b"], int(r["should_hit"]), "train_" + r["kind"])
    add(r["a"], r["b"], int(r["should_hit"]), "train_" + r["kind"])  # twice: the hand-labelled kinds weigh more
for r in gpt:
    add(r["origin"], r["similar"], 1, "gptcache")

pool = [r["a"] for r in train_rows] + [r["b"] for r in train_rows] + [r["origin"] for r in gpt] + banking
pool = list(dict.fromkeys(q for q in pool if 3 <= len(q.split()) <= 40))
R.shuffle(pool)
words = lambda q: re.findall(r"[A-Za-z']+|\d+(?:\.\d+)?|[^\sA-Za-z\d]", q)

def detok(toks):
    s = " ".join(toks)
    return re.sub(r" ([?.!,;:%)])", r"\1", s).replace("( ", "(").replace(" ' ", "'")

def antonym(q):
    t = q.split()
    idx = [i for i, w in enumerate(t) if re.sub(r"\W", "", w.lower()) in antonyms and re.sub(r"\W", "", w.lower()) in common and re.sub(r"\W", "", w.lower()) not in STOP]
    if not idx: return None
    i = R.choice(idx); core = re.sub(r"\W", "", t[i].lower())
    cands = [x for x in antonyms[core] if "_" not in x]
    if not cands: return None
    t[i] = t[i].lower().replace(core, R.choice(cands)); return " ".join(t)

AUX = ["is", "are", "can", "should", "does", "do", "will", "was", "could", "would", "did"]
def negate(q):
    t = q.split()
    for i, w in enumerate(t):
        lw = w.lower().strip("?,.")
        if lw in ("not", "don't", "doesn't", "can't", "isn't", "aren't", "never", "without"):
            if lw == "not": return " ".join(t[:i] + t[i+1:])
            rep = {"don't": "do", "doesn't": "does", "can't": "can", "isn't": "is", "aren't": "are", "never": "always", "without": "with"}[lw]
            t[i] = w.lower().replace(lw, rep); return " ".join(t)
    for i, w in enumerate(t[:-1]):
        if w.lower() in AUX and i < 4:
            form = R.choice(["not", "n't"]) if w.lower() not in ("will", "can") else "not"
            if form == "n't": t[i] = w + "n't"
            else: t.insert(i + 2 if i == 0 else i + 1, "not")
            return " ".join(t)
    if t[0].lower() in ("how", "why", "when") or len(t) < 4:
        return None
    return R.choice(["Don't ", "Never ", "Stop "]) + t[0].lower() + " " + " ".join(t[1:])

def number(q):
    m = list(re.finditer(r"\d+(?:\.\d+)?", q))
    if not m: return None
    x = R.choice(m); v = float(x.group())
    nv = R.choice([v + 1, v * 2, max(v - 1, 0) if v > 1 else v + 3, v * 10])
    s = str(int(nv)) if nv == int(nv) else f"{nv:.1f}"
    if s == x.group(): return None
    return q[:x.start()] + s + q[x.end():]

QW = ["What", "Who", "When", "Where", "Why", "How"]
# "What", "How" and "Which" are often traded in a rewording ("How much
# does it cost" / "What does it cost"); the guards refuse the other trades
# as well, but the verifier should learn that those three are not one.
LOOSE = {"What", "How", "Which"}
QAUX = {"is", "are", "do", "does", "did", "was", "were", "can", "should", "will", "would", "could"}
def qword(q):
    # Only where the other question word makes a real question: "Why is
    # the sky blue?" / "When is ...", never "How much" -> "What much".
    t = q.split()
    if len(t) < 3 or t[0].capitalize() not in QW or t[1].lower() not in QAUX: return None
    first = t[0].capitalize()
    others = [w for w in QW if w != first and not (first in LOOSE and w in LOOSE)]
    return R.choice(others) + q[len(t[0]):]

CONSTRAINTS = [", in Python", ", in JavaScript", " in Rust", " on Windows", " on macOS", " without using a library", ", using only the standard library",
 " for beginners", ", step by step", ", with examples", ", in under 50 words", ", in one sentence", ", as a table", ", in French", ", in Spanish",
 " for a 5-year-old", ", without recursion", " in 2019", " for free", " on a budget", ", for a large team", ", each one a pun", " with sources",
 ", and explain why", ", but keep it short", ", in bullet points", " for kids", " in Europe", " without sugar", ", under $100", " as JSON", ", for production",
 " offline", " on a phone", ", including the edge cases", ", and compare it with the alternatives"]
def constraint(q):
    q2 = q.rstrip("?.! ")
    end = q[len(q2):]
    return q2 + R.choice(CONSTRAINTS) + (end or "")

caps = list({w for q in pool for w in q.split()[1:] if re.fullmatch(r"[A-Z][a-zA-Z0-9+#]+", w)} - {"I"})
def entity(q):
    t = q.split()
    idx = [i for i, w in enumerate(t) if i > 0 and re.fullmatch(r"[A-Z][a-zA-Z0-9+#]+[?,.]?", w) and w.rstrip("?,.") != "I"]
    if not idx: return None
    i = R.choice(idx); tail = t[i][len(t[i].rstrip("?,.")):]
    t[i] = R.choice(caps) + tail; return " ".join(t)

nouns = [w for w in common if w.isalpha() and 4 <= len(w) <= 10]
def swap_word(q):
    t = q.split()
    idx = [i for i, w in enumerate(t) if w.isalpha() and w.lower() not in STOP and len(w) > 3 and w.islower()]
    if not idx: return None
    i = R.choice(idx)
    # another word seen in real questions, so the swap stays plausible
    other = R.choice(R.choice(pool).split()).strip("?,.!").lower()
    if not other.isalpha() or other in STOP or other == t[i] or len(other) < 4: return None
    t[i] = other; return " ".join(t)

def direction(q):
    for sep in (" to ", " into ", " from ", " vs ", " versus ", " than "):
        m = re.search(r"(\b\w+)" + sep + r"(\w+\b)", q)
        if m and m.group(1).lower() not in STOP and m.group(2).lower() not in STOP:
            return q[:m.start()] + m.group(2) + sep + m.group(1) + q[m.end():]
    return None

TEMPL = [("Can I ", ["Am I allowed to ", "Is it possible to ", "Is it OK to "]),
         ("How do I ", ["What steps do I take to ", "What's the process to ", "How would I go about it to "[:0] or "How do you "]),
         ("What is the best way to ", ["How should I ", "What's a good way to "]),
         ("Is there ", ["Do you have ", "Is there any "]),
         ("Why is ", ["What makes ", "How come "]),
         ("How do I ", ["How can I ", "What's the way to ", "How would I ", "What is the best way to ", "How should I "]),
         ("What is ", ["What's ", "Can you explain ", "Explain ", "Tell me what ", "Could you describe "]),
         ("Can you ", ["Could you ", "Please ", "Would you "]),
         ("How can I ", ["How do I ", "Is there a way to ", "What's the best way to "])]
def reword(q):
    for a, bs in TEMPL:
        if q.startswith(a):
            b = R.choice(bs); rest = q[len(a):]
            if b.startswith("Tell me what "): rest = rest.rstrip("?") + " is"
            return b + rest
    return None
def noise(q):
    t = list(q)
    k = R.choice(["lower", "punct", "typo", "typo"])
    if k == "lower": return q.lower()
    if k == "punct": return q.rstrip("?.!") if q[-1] in "?.!" else q + "?"
    i = R.randrange(1, max(2, len(t) - 2))
    if t[i].isalpha() and t[i+1].isalpha(): t[i], t[i+1] = t[i+1], t[i]
    return "".join(t)
def filler(q):
    # Greetings and thanks around the same question.
    pre = R.choice(["", "", "Hi! ", "Hey, ", "Quick question: ", "Hello, ", "Sorry to bother you, "])
    post = R.choice(["", " Thanks!", " Cheers", " Thank you.", " Please."]) if pre == "" or R.random() < 0.5 else ""
    if not pre and not post: post = " Thanks!"
    return pre + (q[0].lower() + q[1:] if pre and not q.startswith("I ") else q) + post
def synonym(q):
    t = q.split()
    idx = [i for i, w in enumerate(t) if w.islower() and w.isalpha() and w not in STOP and w in synonyms and len(w) > 3]
    if not idx: return None
    i = R.choice(idx); c = [x for x in synonyms[t[i]] if x.isalpha()]
    if not c: return None
    t[i] = R.choice(c); return " ".join(t)

makers = [(antonym, 0, "syn_antonym", 1500), (negate, 0, "syn_negation", 1500), (number, 0, "syn_number", 800), (qword, 0, "syn_question_word", 1200),
          (constraint, 0, "syn_constraint", 1500), (entity, 0, "syn_entity", 1000), (swap_word, 0, "syn_swap", 600), (direction, 0, "syn_direction", 600),
          (reword, 1, "syn_reword", 1500), (noise, 1, "syn_noise", 1500), (filler, 1, "syn_filler", 800), (synonym, 1, "syn_synonym", 1200)]
for fn, y, kind, n in makers:
    got = 0
    for q in pool:
        if got >= n: break
        r = fn(q)
        if r and r.strip() != q.strip():
            add(q, r, y, kind); got += 1
# unrelated-but-close: other questions from the same source with shared words
for i in range(1500):
    a, b = R.sample(pool[:4000], 2)
    if len(set(a.lower().split()) & set(b.lower().split()) - STOP) >= 1:
        add(a, b, 0, "syn_topic")
R.shuffle(out)
json.dump(out, open(sys.argv[2], "w"))
from collections import Counter
print(len(out), Counter(k for *_, k in out).most_common())
