"""The tokenizer part of a GGUF: tokens, merges, token types, special ids, add_bos/eos, chat template
and `tokenizer.ggml.pre` (which pre-tokenizer llama.cpp applies).

Two sources behind one `TokenizerSpec`:
- a GGUF base: every `tokenizer.*` key is copied verbatim (it is already what llama.cpp expects);
- a HF tokenizer (byte-level BPE): built from tokenizer.json; `pre` is found the way llama.cpp's
  converter does it (sha256 of the token ids of its check text), using the table and check text
  of the pinned llama.cpp tree, so it follows the pin. Unknown tokenizers fall back to "default"
  and the fallback is reported (notes -> manifest and summary), never silent.

Then `gate()` (run in the `check` stage) makes tokenization a hard requirement: llama.cpp must make
exactly HF's token ids on a varied text set, or the conversion fails; pre-tokenizers are chosen by
behaviour when the hash is unknown (see the gate section below).
"""

from __future__ import annotations

import ast
import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from .errors import ConversionError

# gguf TokenType values (llama.cpp): 1 normal, 2 unknown, 3 control, 4 user defined, 5 unused, 6 byte
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED = 1, 2, 3, 4, 5
PRE_FALLBACK = "default"


@dataclass
class TokenizerSpec:
    source: str                                 # "gguf" or "hf"
    kv: list[tuple[str, object, object, object]] = field(default_factory=list)  # (key, value, vtype, subtype)
    pre: str = ""
    n_tokens: int = 0
    notes: list[str] = field(default_factory=list)
    fidelity: dict | None = None                # tokenizer gate result (gate()), recorded in the manifest

    def add_to(self, writer) -> None:
        for key, value, vtype, sub in self.kv:
            writer.add_key_value(key, value, vtype, sub)

    def summary(self) -> dict:
        return {"source": self.source, "pre": self.pre, "n_tokens": self.n_tokens, "notes": self.notes,
                "fidelity": self.fidelity}


def from_gguf(path: Path) -> TokenizerSpec:
    """Copy tokenizer.* keys from a GGUF file unchanged."""
    from gguf import GGUFReader, GGUFValueType

    reader = GGUFReader(path)
    spec = TokenizerSpec("gguf")
    for key, f in reader.fields.items():
        if not key.startswith("tokenizer."):
            continue
        vtype = f.types[0]
        sub = f.types[-1] if vtype == GGUFValueType.ARRAY else None
        value = f.contents()
        spec.kv.append((key, value, vtype, sub))
        if key == "tokenizer.ggml.pre":
            spec.pre = value
        if key == "tokenizer.ggml.tokens":
            spec.n_tokens = len(value)
    if spec.n_tokens == 0:
        raise ConversionError(f"{path} has no tokenizer.ggml.tokens; use a GGUF base that embeds its tokenizer")
    return spec


def _upstream_pre_table():
    """(check text, {hash: pre name}) from the pinned llama.cpp converter, or (None, {})."""
    try:
        from finllm_edge.native.fetch import llama_src_dir

        src = llama_src_dir(progress=False)
    except Exception:
        return None, {}
    for rel in ("conversion/base.py", "convert_hf_to_gguf.py"):
        p = src / rel
        if not p.exists():
            continue
        text = p.read_text(encoding="utf-8")
        m = re.search(r"^\s*chktxt = (.+)$", text, re.M)
        if not m:
            continue
        chktxt = ast.literal_eval(m.group(1))
        table = dict(re.findall(r'if chkhsh == "([0-9a-f]{64})":\s*\n(?:\s*#[^\n]*\n)*\s*res = "([^"]+)"', text))
        return chktxt, table
    return None, {}


def detect_pre(tokenizer) -> tuple[str, str | None]:
    """(pre name, note or None). The note explains a fallback."""
    chktxt, table = _upstream_pre_table()
    if chktxt is None:
        return PRE_FALLBACK, ("tokenizer.ggml.pre: the pinned llama.cpp tree is not available to identify the "
                              f"pre-tokenizer; fell back to {PRE_FALLBACK!r}. Run `finllm-edge native fetch`")
    digest = hashlib.sha256(str(tokenizer.encode(chktxt)).encode()).hexdigest()
    if digest in table:
        return table[digest], None
    return PRE_FALLBACK, (f"tokenizer.ggml.pre: unknown pre-tokenizer (hash {digest[:16]}...); fell back to "
                          f"{PRE_FALLBACK!r}. llama.cpp may split text differently from the HF tokenizer; "
                          "check the parity report")


def from_hf(tokenizer, vocab_size: int, folder: Path | None = None) -> TokenizerSpec:
    """Build the GGUF tokenizer keys from a HF byte-level BPE tokenizer."""
    from gguf import GGUFValueType as T

    backend = getattr(tokenizer, "backend_tokenizer", None) or getattr(tokenizer, "_tokenizer", None)
    if backend is None:
        raise ConversionError("only fast (tokenizer.json) tokenizers are supported; save the tokenizer with "
                              "AutoTokenizer.from_pretrained(..., use_fast=True).save_pretrained(base_dir)")
    tj = json.loads(backend.to_str())
    model = tj.get("model", {})
    if model.get("type") != "BPE" or "ByteLevel" not in json.dumps(tj.get("pre_tokenizer")):
        raise ConversionError(
            f"tokenizer model {model.get('type')!r} with pre-tokenizer {tj.get('pre_tokenizer', {}).get('type')!r} "
            "is not supported; this converter writes byte-level BPE (GPT-2 style) vocabularies only"
        )
    vocab = tokenizer.get_vocab()
    reverse = {i: t for t, i in vocab.items()}
    added = {a["id"]: a for a in tj.get("added_tokens", [])}
    tokens, types = [], []
    for i in range(vocab_size):
        if i not in reverse:
            tokens.append(f"[PAD{i}]")
            types.append(UNUSED)
            continue
        tok = reverse[i]
        if i in added:
            looks_special = tok.startswith("<|") and tok.endswith("|>")
            types.append(CONTROL if added[i].get("special") or looks_special else USER_DEFINED)
        else:
            types.append(NORMAL)
        tokens.append(tok)
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    pre, note = detect_pre(tokenizer)
    spec = TokenizerSpec("hf", pre=pre, n_tokens=len(tokens))
    if note:
        spec.notes.append(note)
    kv = spec.kv
    kv.append(("tokenizer.ggml.model", "gpt2", T.STRING, None))
    kv.append(("tokenizer.ggml.pre", pre, T.STRING, None))
    kv.append(("tokenizer.ggml.tokens", tokens, T.ARRAY, T.STRING))
    kv.append(("tokenizer.ggml.token_type", types, T.ARRAY, T.INT32))
    kv.append(("tokenizer.ggml.merges", merges, T.ARRAY, T.STRING))
    for kind in ("bos", "eos", "unk", "pad"):
        tid = getattr(tokenizer, f"{kind}_token_id", None)
        key = {"unk": "unknown", "pad": "padding"}.get(kind, kind)
        if tid is not None and 0 <= tid < vocab_size:
            kv.append((f"tokenizer.ggml.{key}_token_id", int(tid), T.UINT32, None))
    probe = tokenizer("a")["input_ids"]
    bos, eos = getattr(tokenizer, "bos_token_id", None), getattr(tokenizer, "eos_token_id", None)
    kv.append(("tokenizer.ggml.add_bos_token", bool(bos is not None and probe[:1] == [bos]), T.BOOL, None))
    kv.append(("tokenizer.ggml.add_eos_token", bool(eos is not None and probe[-1:] == [eos] and len(probe) > 1),
               T.BOOL, None))
    if getattr(tokenizer, "chat_template", None):
        tmpl = tokenizer.chat_template
        if isinstance(tmpl, dict):
            tmpl = tmpl.get("default") or next(iter(tmpl.values()))
        kv.append(("tokenizer.chat_template", str(tmpl), T.STRING, None))
    return spec


# ---- tokenizer fidelity gate ------------------------------------------------------------------
# llama.cpp must split text into exactly the token ids the HF tokenizer makes. Checked on a varied
# set (finance text with numbers, punctuation, whitespace runs, non-English text, emoji) plus the
# user's own evaluation and calibration texts. The pre-tokenizer is chosen by behaviour: the one the
# hash names is tried first; if it does not reproduce HF (or the hash is unknown), every pre-tokenizer
# the pinned llama.cpp knows is tried and one that reproduces HF exactly is kept.

CHECK_TEXTS = (
    "Q3 FY2024 revenue rose 12.5% to $1,234,567.89 (vs. $1,097,000 in Q3 FY2023); EPS: $3.14 -> $3.5.",
    "Net debt/EBITDA fell from 2.75x to 1.4x; interest coverage = 6.2x. Call 1-800-555-0199 or +44 20 7946 0958.",
    "The 10-K (p. 47) says: \"we don't expect material losses\"; THE BANK'S CFO SAID IT'LL BE FINE... 'Really?'",
    "   indented   text\twith\ttabs\n\n\n  and  \n \n trailing spaces   \r\n",
    "ISIN US0378331005, CUSIP 037833100, 2024-06-30T23:59:59Z, 0.000123, 1e-9, 12345678901234567890",
    "Société Générale a publié un bénéfice net de 1,2 Md€ ; Müller & Söhne GmbH: Umsatz +7 % ggü. Vorjahr.",
    "净利润同比增长12.5%，营业收入达到345亿元。日本銀行は金利を据え置いた。한국은행 기준금리 3.50%",
    "Прибыль выросла на 15 %. الأرباح ارتفعت بنسبة ١٥٪. मुनाफा 15% बढ़ा। Κέρδη +15%.",
    "Markets 📈🚀 today; bears 🐻 vs bulls 🐂 — 👍🏽 👨‍👩‍👧 🇺🇸 ∑ ≥ ≤ ± ∞ ‰ ¥1,000 £5 €99 ₹2,50,000 ₿0.5",
    "def npv(rate, cfs):\n    return sum(cf / (1 + rate) ** t for t, cf in enumerate(cfs))  # 8% -> 0.08\n",
    "A\u00a0non-breaking space, a zero\u200bwidth space, ﬁ ligature, e\u0301 combining, ½ ², Ⅻ.",
    "ALL CAPS HEADLINE: FED HOLDS RATES AT 5.25%-5.50%!!! ??? ... --- *** ### @user #earnings $AAPL",
)


@dataclass
class Fidelity:
    pre: str
    how: str                          # "hash", "behaviour", "override" or "gguf"
    matching: list[str]               # known pre-tokenizer groups (first alias) that reproduced HF; [] if not searched
    n_texts: int
    n_tokens: int


def known_pre_tokenizers() -> list[tuple[str, ...]]:
    """Groups of `tokenizer.ggml.pre` names that the pinned llama.cpp treats identically (same branch
    body in llama-vocab.cpp), in its order. Empty if the tree is not available."""
    try:
        from finllm_edge.native.fetch import llama_src_dir

        text = (llama_src_dir(progress=False) / "src" / "llama-vocab.cpp").read_text(encoding="utf-8")
    except Exception:
        return []
    start = text.find("if (type == LLAMA_VOCAB_TYPE_BPE)")
    end = text.find("unknown pre-tokenizer type", start)
    chain = text[start:end]
    groups: dict[str, list[str]] = {}
    branch = r'if \(\s*((?:tokenizer_pre\s*==\s*"[^"]+"\s*(?:\|\|\s*)?)+)\)\s*\{([^{}]*)\}'
    for names, body in re.findall(branch, chain):
        key = " ".join(body.split())
        groups.setdefault(key, []).extend(re.findall(r'"([^"]+)"', names))
    return [tuple(g) for g in groups.values()]


def write_vocab_gguf(path: Path, arch, config, spec: TokenizerSpec, pre: str) -> Path:
    """A GGUF with the model's hyper-parameters and tokenizer (pre = `pre`) and no tensors."""
    import gguf

    w = gguf.GGUFWriter(path, arch.gguf_arch)
    try:
        arch.write_hparams(w, config)
        for key, value, vtype, sub in spec.kv:
            w.add_key_value(key, pre if key == "tokenizer.ggml.pre" else value, vtype, sub)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_ti_data_to_file()
    finally:
        w.close()
    return path


def hf_token_ids(tokenizer, texts: list[str]) -> list[list[int]]:
    return [list(tokenizer(t)["input_ids"]) for t in texts]


def first_difference(hf: list[list[int]], ll: list[list[int]]) -> tuple[int, int] | None:
    for i, (a, b) in enumerate(zip(hf, ll)):
        if a != b:
            j = next((k for k, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
            return i, j
    return None


def _tokenize_child(path: Path, texts: list[str], conn) -> None:
    import faulthandler
    import os

    from .llama_eval import gguf_tokenize

    # a pre-tokenizer that aborts here must not print a backtrace (nor start gdb: GGML_NO_BACKTRACE)
    faulthandler.disable()
    os.environ["GGML_NO_BACKTRACE"] = "1"
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        conn.send(("ok", gguf_tokenize(path, texts)))
    except BaseException as exc:  # noqa: BLE001
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
    finally:
        conn.close()


def _tokens_with(arch, config, spec, pre: str, texts: list[str], work: Path, timeout: float = 120.0):
    """llama.cpp's token ids for `texts` with pre-tokenizer `pre`, or None if llama.cpp refuses it.

    Runs in a forked child: some pre-tokenizer types abort the process on a vocabulary they were not
    made for (a GGML_ASSERT in the BPE merge lookup), which must not take convert down with them."""
    import multiprocessing as mp

    path = write_vocab_gguf(work / f"vocab-{abs(hash(pre))}.gguf", arch, config, spec, pre)
    ctx = mp.get_context("fork")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_tokenize_child, args=(path, texts, child), daemon=True)
    proc.start()
    child.close()
    try:
        msg = parent.recv() if parent.poll(timeout) else ("error", "timeout")
    except EOFError:
        msg = ("error", f"crashed (exit code {proc.exitcode})")
    finally:
        if proc.is_alive():
            proc.kill()
        proc.join(10)
        parent.close()
        path.unlink(missing_ok=True)
    return msg[1] if msg[0] == "ok" else None


def _describe(tokenizer, texts, labels, hf, ll, where: tuple[int, int]) -> str:
    i, j = where
    a, b = hf[i], ll[i]

    def pieces(ids):
        return [tokenizer.decode([t]) for t in ids]

    return (f"{labels[i]} ({texts[i][:60]!r}...) from token {j}: HF {a[j:j + 6]} {pieces(a[j:j + 6])} vs llama.cpp "
            f"{b[j:j + 6]} {pieces(b[j:j + 6])} ({len(a)} vs {len(b)} tokens)")


PREFER = ("gpt-2", "llama-bpe", "qwen2", "smollm")   # tie-break among equally exact pre-tokenizers


def gate(tokenizer, spec: TokenizerSpec, arch, config, extra_texts: dict[str, str] | None = None,
         override: str | None = None, prefer: tuple[str, ...] = PREFER) -> Fidelity:
    """Make sure llama.cpp, with `spec`'s pre-tokenizer (or `override`), tokenizes exactly as `tokenizer`.

    Sets spec.pre (and its tokenizer.ggml.pre key) to the pre-tokenizer kept; raises
    TokenizerMismatchError naming the first difference and the known pre-tokenizers that would match."""
    import tempfile

    from .errors import TokenizerMismatchError

    texts = list(CHECK_TEXTS)
    labels = [f"check text {k + 1}" for k in range(len(texts))]
    for name, t in (extra_texts or {}).items():
        if t:
            texts.append(t[:200_000])
            labels.append(name)
    hf = hf_token_ids(tokenizer, texts)
    n_tokens = sum(map(len, hf))
    ll_texts, nfc_note = _nfc_inputs(tokenizer, texts, labels)
    groups = known_pre_tokenizers()
    known = {n for g in groups for n in g}
    if override is not None and groups and override not in known:
        raise TokenizerMismatchError(
            f"--pre-tokenizer {override!r} is not a pre-tokenizer the pinned llama.cpp knows; known: "
            + ", ".join(g[0] for g in groups))
    first = override or spec.pre
    how = "override" if override else ("gguf" if spec.source == "gguf" else "hash")
    with tempfile.TemporaryDirectory(prefix="fe-vocab-") as tmp:
        work = Path(tmp)
        ll = _tokens_with(arch, config, spec, first, ll_texts, work)
        if ll is not None and ll != hf and spec.source == "gguf" and not override and spec.pre in HF_PRE_REPAIRS:
            # transformers rebuilt the HF tokenizer from the GGUF without this pre-tokenizer's rules; the GGUF
            # (made by upstream from the real tokenizer) is right. Repair the HF side (saved into merged/).
            backend = tokenizer.backend_tokenizer
            saved = backend.pre_tokenizer
            backend.pre_tokenizer = HF_PRE_REPAIRS[spec.pre]()
            repaired = hf_token_ids(tokenizer, texts)
            if repaired == ll:
                hf = repaired
                spec.notes.append(
                    f"tokenizer: the HF tokenizer transformers rebuilt from the GGUF lacked the {spec.pre!r} "
                    "pre-tokenizer rules (e.g. digits split one by one); repaired, so merged/ tokenizes as the GGUF")
            else:
                backend.pre_tokenizer = saved
        if nfc_note:
            spec.notes.append(nfc_note)
        if ll is not None and ll == hf and (override or spec.pre != PRE_FALLBACK or not groups):
            _set_pre(spec, first)
            return _record(spec, Fidelity(first, how, [], len(texts), n_tokens))
        failure = None
        if ll is not None and ll != hf:
            failure = _describe(tokenizer, texts, labels, hf, ll, first_difference(hf, ll))
        matching = []
        for g in groups:
            if first in g and ll is not None:
                if ll == hf:
                    matching.append(g[0])
                continue
            got = _tokens_with(arch, config, spec, g[0], ll_texts, work)
            if got == hf:
                matching.append(g[0])
    if override is not None or not matching:
        what = f"--pre-tokenizer {override!r}" if override else f"pre-tokenizer {first!r}"
        raise TokenizerMismatchError(
            f"tokenizer fidelity: with {what} llama.cpp does not reproduce the HF tokenizer: "
            + (failure or f"llama.cpp could not load the vocabulary with {first!r}")
            + ". Known pre-tokenizers that reproduce HF exactly on the check texts: "
            + (", ".join(matching) if matching else "none")
            + (f" (rerun with --pre-tokenizer {matching[0]})" if matching and override else
               ". This tokenizer cannot be converted faithfully for llama.cpp; the GGUF would see different tokens "
               "than the model was trained on"))
    aliases = {g[0]: g for g in groups}

    def rank(name):
        hits = [k for k, p in enumerate(prefer) if p in aliases.get(name, (name,))]
        return (hits[0] if hits else len(prefer), matching.index(name))

    chosen = min(matching, key=rank)
    _set_pre(spec, chosen)
    spec.notes.append(
        f"tokenizer.ggml.pre: {first!r} "
        + ("is not a known hash; " if first == PRE_FALLBACK else "did not reproduce HF; ")
        + f"chose {chosen!r} by behaviour: it reproduces the HF token ids exactly on {len(texts)} texts "
        f"({n_tokens} tokens); pre-tokenizers that match: {', '.join(matching)}")
    return _record(spec, Fidelity(chosen, "behaviour", matching, len(texts), n_tokens))


def _record(spec: TokenizerSpec, fid: Fidelity) -> Fidelity:
    from dataclasses import asdict

    spec.fidelity = {**asdict(fid), "identical_token_ids": True}
    return fid


def _hf_pre_smollm():
    from tokenizers import pre_tokenizers as pt

    return pt.Sequence([pt.Digits(individual_digits=True), pt.ByteLevel(add_prefix_space=False, use_regex=True)])


def _hf_pre_gpt2():
    from tokenizers import pre_tokenizers as pt

    return pt.ByteLevel(add_prefix_space=False, use_regex=True)


# llama.cpp pre-tokenizer -> the HF pre-tokenizer it implements, for tokenizers transformers rebuilds from a
# GGUF base (it always rebuilds GPT-2's regex, which is wrong for SmolLM's digit splitting).
HF_PRE_REPAIRS = {"smollm": _hf_pre_smollm, "gpt-2": _hf_pre_gpt2}


def repair_gguf_tokenizer(tokenizer, pre: str):
    """Give a tokenizer rebuilt by transformers from a GGUF with `pre` the pre-tokenizer it really has."""
    if pre in HF_PRE_REPAIRS:
        tokenizer.backend_tokenizer.pre_tokenizer = HF_PRE_REPAIRS[pre]()
    return tokenizer


def _nfc_inputs(tokenizer, texts, labels):
    """llama.cpp applies no Unicode normalizer. A HF tokenizer with an NFC normalizer (Qwen2) is compared on
    NFC input on the llama.cpp side, and the convention is reported (apps should send NFC text)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    try:
        norm = json.loads(backend.to_str()).get("normalizer") if backend is not None else None
    except Exception:
        norm = None
    if not norm or norm.get("type") != "NFC":
        return texts, None
    import unicodedata

    ll = [unicodedata.normalize("NFC", t) for t in texts]
    changed = [labels[i] for i, (a, b) in enumerate(zip(texts, ll)) if a != b]
    note = ("tokenizer: the HF tokenizer normalizes input to Unicode NFC and llama.cpp does not; compared on NFC "
            "text" + (f" ({', '.join(changed)} were not NFC)" if changed else "")
            + ". Send NFC-normalized text to the GGUF (most text already is)")
    return ll, note


def _set_pre(spec: TokenizerSpec, pre: str) -> None:
    spec.pre = pre
    spec.kv = [(k, pre if k == "tokenizer.ggml.pre" else v, t, s) for k, v, t, s in spec.kv]
    if not any(k == "tokenizer.ggml.pre" for k, *_ in spec.kv):
        from gguf import GGUFValueType

        spec.kv.append(("tokenizer.ggml.pre", pre, GGUFValueType.STRING, None))
    spec.notes[:] = [n for n in spec.notes if "fell back to" not in n]
