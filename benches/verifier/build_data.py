"""Builds the verifier's training pairs: the `train` rows of p402's hard
sets, GPTCache's paraphrases, and pairs made from questions by changing
one thing an answer depends on (WordNet antonyms, a negation, a number,
the question word, an added constraint, another entity, another word)."""
import csv, random, re, sys, json, hashlib
from pathlib import Path

R = random.Random(402)
repo = Path(sys.argv[1])
here = Path(__file__).resolve().parent
data = repo / "benches/data"
lex = repo / "src/cache/lexicon"

def rows(name):
    with open(data / name, newline="") as f:
        return list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))

hard = [dict(r, source=n) for n in ("cache_dev.tsv", "fow_cache_pairs.tsv", "cache_fresh.tsv", "cache_written.tsv", "cache_fresh2.tsv", "cache_written2.tsv", "cache_fresh3.tsv", "cache_written3.tsv", "cache_fresh4.tsv") for r in rows(n)]
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

caps = sorted({w for q in pool for w in q.split()[1:] if re.fullmatch(r"[A-Z][a-zA-Z0-9+#]+", w)} - {"I"})
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

# Written for p402 (benches/verifier/rewordings.tsv): heavy rewordings that
# share few words, numbers spelled out, and "how long" / "how many days"
# style spans, as positives; and the same spans asking for something else,
# as negatives. Three times over: few, and hand-labelled.
with open(here / "rewordings.tsv", newline="") as f:
    authored = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
# Nothing written or made here may repeat a question of the `tune` or
# `test` rows (some common questions were written twice, independently).
# Common questions get written alike, so "repeat" means sharing half the
# content words (Jaccard) with a question of those rows, not only the text.
def content_words(q):
    return frozenset(w for w in re.findall(r"[a-z0-9']+", q.lower()) if w not in STOP)
held_out = [content_words(q) for r in hard if r["split"] != "train" for q in (r["a"], r["b"])]
near_cache = {}
def near_held_out(q):
    if q not in near_cache:
        c = content_words(q)
        near_cache[q] = any(len(c & h) >= 0.5 * len(c | h) for h in held_out if c | h)
    return near_cache[q]
authored = [r for r in authored if not near_held_out(r["a"]) and not near_held_out(r["b"])]
for r in authored:
    for _ in range(3):
        add(r["a"], r["b"], int(r["should_hit"]), "authored_" + r["kind"])

# Same subject, another question ("How much does X cost?" / "What features
# does X include?"), as negatives; the same question worded another way,
# as positives. The wordings and subjects are p402's own.
ASKS = {
    "cost": (["plan", "app"], ["How much does {x} cost?", "What is the price of {x}?", "How much do I have to pay for {x}?", "What will {x} cost me?", "What's {x} going to set me back?"]),
    "features": (["plan", "app"], ["What features does {x} include?", "What do I get with {x}?", "Which features come with {x}?", "What's included in {x}?", "What can I do with {x}?"]),
    "cancel": (["plan"], ["How do I cancel {x}?", "How can I end my {x} subscription?", "What are the steps to stop paying for {x}?", "I want to quit {x}; how do I do that?"]),
    "upgrade": (["plan"], ["How do I upgrade to {x}?", "How can I switch my account to {x}?", "What do I do to move up to {x}?"]),
    "install": (["tool", "app"], ["How do I install {x}?", "What are the steps to set up {x} on my computer?", "How can I get {x} installed?", "Walk me through installing {x}.", "What's the way to put {x} on my machine?"]),
    "uninstall": (["tool", "app"], ["How do I uninstall {x}?", "How can I remove {x} completely?", "What's the way to get rid of {x} on my machine?", "Walk me through removing {x}."]),
    "update": (["tool", "app"], ["How do I update {x}?", "How can I upgrade {x} to the newest version?", "What's the way to get the latest release of {x}?"]),
    "what": (["tool", "app", "plan"], ["What is {x}?", "Can you explain what {x} is?", "Give me an overview of {x}.", "I keep hearing about {x}; what is it exactly?"]),
    "alternatives": (["tool", "app"], ["What are some alternatives to {x}?", "What can I use instead of {x}?", "Which products are similar to {x}?", "Is there anything like {x} that I could switch to?"]),
    "learn": (["tool"], ["How do I learn {x}?", "What's the best way to get started with {x}?", "Where should a beginner start with {x}?", "How can I teach myself {x}?"]),
    "maker": (["tool", "app"], ["Who makes {x}?", "Which company is behind {x}?", "Who develops {x}?"]),
    "safe": (["tool", "app"], ["Is {x} safe to use?", "Is {x} secure?", "Can I trust {x} with my data?"]),
    "difference": (["tool", "app"], ["What's the difference between {x} and {y}?", "How does {x} differ from {y}?", "{x} or {y}: how are they different?", "Compare {x} with {y}."]),
}
SUBJECTS = {
    "plan": ["the Pro plan", "the Business plan", "the Team plan", "Spotify Premium", "Amazon Prime", "YouTube Premium", "the Enterprise tier", "Microsoft 365 Family", "iCloud+", "the annual membership", "the Plus subscription", "the Starter plan"],
    "app": ["Slack", "Zoom", "Figma", "Notion", "Dropbox", "1Password", "Trello", "Canva", "Evernote", "Todoist", "Grammarly", "Obsidian"],
    "tool": ["Docker", "Kubernetes", "Node.js", "PostgreSQL", "Redis", "Terraform", "Nginx", "Homebrew", "VS Code", "Ansible", "Jenkins", "MongoDB", "Elasticsearch", "Git", "Rust", "Go"],
}
def asked(intent, x):
    kinds, forms = ASKS[intent]
    pool_ = [s for k in kinds for s in SUBJECTS[k] if s != x]
    y = R.choice(pool_)
    return R.choice(forms).format(x=x, y=y), y
subject_kind = {s: k for k, ss in SUBJECTS.items() for s in ss}
def same_subject(positive):
    x = R.choice(list(subject_kind))
    intents = [i for i, (kinds, _) in ASKS.items() if subject_kind[x] in kinds]
    if positive:
        i = R.choice(intents)
        forms = ASKS[i][1]
        f1, f2 = R.sample(forms, 2)
        y = R.choice([s for s in subject_kind if subject_kind[s] == subject_kind[x] and s != x])
        return f1.format(x=x, y=y), f2.format(x=x, y=y)
    i, j = R.sample(intents, 2)
    return asked(i, x)[0], asked(j, x)[0]

# The same input, another task ("Write a commit message for this diff" /
# "Review this diff"), as negatives; the same task worded another way, as
# positives.
CODE = ["this diff", "this function", "this regex", "this SQL query", "this Python script", "this class", "this shell script", "this Dockerfile", "this config file", "this React component", "this stack trace", "this pull request"]
TEXT = ["this email", "this essay", "my cover letter", "this paragraph", "this article", "this contract", "this blog post", "my resume", "this speech", "this product description", "these meeting notes", "this report"]
TASKS = {
    "explain": (CODE, ["Explain {o}", "What does {o} do?", "Walk me through {o}", "Help me understand {o}", "Can you break down {o} for me?"]),
    "review": (CODE, ["Review {o}", "Do a code review of {o}", "Give me review comments on {o}", "Look over {o} like a reviewer would"]),
    "tests": (CODE, ["Write tests for {o}", "Write unit tests that cover {o}", "Create a test suite for {o}", "Add tests for {o}"]),
    "refactor": (CODE, ["Refactor {o}", "Clean up {o} so it reads better", "Restructure {o} without changing its behaviour", "Rewrite {o} to be more maintainable"]),
    "bugs": (CODE, ["Find the bugs in {o}", "What's wrong with {o}?", "Spot the mistakes in {o}", "Debug {o}"]),
    "comment": (CODE, ["Add comments to {o}", "Annotate {o} with explanatory comments", "Put comments in {o} explaining each part"]),
    "faster": (CODE, ["Optimize {o}", "Make {o} run faster", "Speed up {o}", "Improve the performance of {o}"]),
    "commit": (["this diff", "these changes", "this patch"], ["Write a commit message for {o}", "Suggest a git commit message for {o}", "What should the commit message for {o} say?", "Give me a commit message describing {o}"]),
    "summarize": (TEXT, ["Summarize {o}", "Give me a short summary of {o}", "TL;DR {o}", "What are the key points of {o}?", "Condense {o} into its main points"]),
    "proofread": (TEXT, ["Proofread {o}", "Check {o} for spelling and grammar mistakes", "Fix the typos and grammar in {o}", "Correct the writing errors in {o}"]),
    "formal": (TEXT, ["Rewrite {o} in a more formal tone", "Make {o} sound more professional", "Rephrase {o} so it's formal"]),
    "shorter": (TEXT, ["Shorten {o}", "Make {o} more concise", "Cut {o} down", "Trim {o} to fewer words"]),
    "feedback": (TEXT, ["Give feedback on {o}", "Critique {o}", "What could be improved in {o}?", "Tell me how to make {o} better"]),
    "title": (TEXT, ["Suggest a title for {o}", "Write a headline for {o}", "What would be a good title for {o}?"]),
    "reply": (["this email", "this message", "this complaint"], ["Write a reply to {o}", "Draft a response to {o}", "Help me answer {o}"]),
}
def same_input(positive):
    t = R.choice(list(TASKS))
    objects, forms = TASKS[t]
    o = R.choice(objects)
    if positive:
        f1, f2 = R.sample(forms, 2)
        return f1.format(o=o), f2.format(o=o)
    others = [u for u, (objs, _) in TASKS.items() if u != t and o in objs]
    if not others:
        return None
    u = R.choice(others)
    return R.choice(forms).format(o=o), R.choice(TASKS[u][1]).format(o=o)

for fn, y, kind, n in [(same_subject, 1, "tmpl_same_question", 450), (same_subject, 0, "tmpl_other_question", 700),
                       (same_input, 1, "tmpl_same_task", 350), (same_input, 0, "tmpl_other_task", 600)]:
    got, seen = 0, set()
    for _ in range(n * 20):
        if got >= n: break
        pair = fn(bool(y))
        if not pair or pair[0] == pair[1] or frozenset(pair) in seen: continue
        if near_held_out(pair[0]) or near_held_out(pair[1]): continue
        seen.add(frozenset(pair)); add(pair[0], pair[1], y, kind); got += 1
R.shuffle(out)
# `build_data.py REPO OUT`: every kind, for one training from the base
# model (train.sh). `build_data.py REPO OUT first`: the first stage as
# issue 22 shipped it, every kind but those written for p402 and made from
# its templates. `build_data.py REPO OUT N`: a second stage continued from
# a trained verifier, those, with N of the first stage's replayed.
new = [p for p in out if p[3].startswith(("authored_", "tmpl_"))]
old = [p for p in out if not p[3].startswith(("authored_", "tmpl_"))]
stage = sys.argv[3] if len(sys.argv) > 3 else "all"
out = old + new if stage == "all" else old if stage == "first" else new + R.sample(old, int(stage))
R.shuffle(out)
json.dump(out, open(sys.argv[2], "w"))
from collections import Counter
print(len(out), Counter(k for *_, k in out).most_common())
