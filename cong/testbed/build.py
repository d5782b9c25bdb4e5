"""Build the testbed offline and deterministically: prompts, corpus, tokenizer, weak and strong base models.

The result is cached under `<cache>/testbed/<hash of the settings>/`:
    weak/ strong/        Hugging Face model folders (LlamaForCausalLM + tokenizer with a chat template)
    train.jsonl eval.jsonl   prompt sets (`id`, `prompt`, `family`, `answer`)
    card.json README.md  the testbed card: sizes, settings, held-out accuracy and reward of both models, and the
                         world's sha256 (`world_sha256`)

The same settings build the same bytes on any x86-64 CPU: the build runs in a process of its own whose numerics
are pinned (REPRODUCIBLE_ENV): ATen's portable kernels instead of the CPU's widest vector unit, MKL's conditional
numerical reproducibility mode, two threads, and an AdamW whose square root is exact. The world's sha256 covers
every file but the card, whose build time varies. The tiny preset's world ships with the package (SHIPPED_WORLDS).

The pretraining corpus holds neither the train nor the eval prompts (nor, so, an answer to one): a model that had
seen them would answer them from memory, and the methods would be compared on recall.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

from cong.config import TestbedSettings
from cong.data import write_jsonl
from cong.errors import CongError
from cong.evaluation import gates
from cong.storage.cache import cache_root, entry_lock
from cong.testbed import world

SPECIAL_TOKENS = ["<|pad|>", "<|bos|>", "<|eos|>", "<|im_start|>", "<|im_end|>", "<|unk|>"]
CHAT_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' }}"
    "{% if message['role'] == 'assistant' %}{% generation %}{{ message['content'] + '<|im_end|>' }}"
    "{% endgeneration %}{% else %}{{ message['content'] + '<|im_end|>' }}{% endif %}{{ '\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
BUILD_VERSION = 5  # bump when the world or the build changes, so old caches are not reused
Progress = Callable[[str], None]
# Threads of the build, whatever the machine has: how work is split between threads changes the sums.
BUILD_THREADS = 2
# The build process's numerics, the same on every x86-64 CPU. Measured on the micro testbed: ATEN_CPU_CAPABILITY
# default, avx2 and avx512 give three worlds, MKL's own CPU dispatch (MKL_CBWR unset) another, and under MKL_CBWR
# COMPATIBLE one thread and two give two more. MKL's other branches (SSE4_2, AVX, AVX2) gave one world on an AMD
# EPYC and others under an emulated Intel Haswell: only COMPATIBLE is the same across vendors. Pinned, these cost
# the micro build 2x (12.6 s -> 24.9 s), mostly MKL's portable matrix products.
REPRODUCIBLE_ENV = {
    "ATEN_CPU_CAPABILITY": "default",  # ATen's kernels without CPU-specific vector code
    "MKL_CBWR": "COMPATIBLE",  # MKL's one code path for every x86-64 CPU
    "OMP_NUM_THREADS": str(BUILD_THREADS),
    "MKL_NUM_THREADS": str(BUILD_THREADS),
    "CUDA_VISIBLE_DEVICES": "",  # a CPU build on a GPU machine too
}
# Files of a built world that are not the world: the card records the build's time.
CARD_FILES = ("card.json", "README.md")
# Reference worlds shipped with the package, one folder per cache key (settings and build version): the tiny
# preset's, whose build takes minutes (MKL's portable code path is 2 to 3 times slower than its native one).
SHIPPED_WORLDS = Path(__file__).parent / "worlds"


def testbed_dir(settings: TestbedSettings) -> Path:
    key = json.dumps({"version": BUILD_VERSION, **settings.model_dump()}, sort_keys=True)
    return cache_root() / "testbed" / hashlib.sha256(key.encode()).hexdigest()[:16]


def _prompt_sets(settings: TestbedSettings) -> tuple[list[world.Example], list[world.Example], list[world.Example]]:
    """Disjoint held-out eval prompts, train prompts, and pretraining prompts (no eval prompt leaks); in each, the
    strong-only families make `strong_only_share` of the prompts."""
    rng = random.Random(settings.seed)
    seen: set[str] = set()
    examples: list[world.Example] = []
    wanted = settings.n_eval_prompts + settings.n_train_prompts + settings.n_pretrain_docs
    for _ in range(20 * wanted):
        if len(examples) == wanted:
            break
        example = world.make_example(rng, _family(len(examples), settings.strong_only_share))
        if example.prompt not in seen:
            seen.add(example.prompt)
            examples.append(example)
    else:
        raise CongError(f"testbed: the world's families hold fewer than the {wanted} distinct prompts asked for.")
    n_eval, n_train = settings.n_eval_prompts, settings.n_train_prompts
    sets = examples[:n_eval], examples[n_eval : n_eval + n_train], examples[n_eval + n_train :]
    for part in sets:
        rng.shuffle(part)
    return sets


def _family(index: int, strong_only_share: float) -> str:
    """The family of the index-th prompt: strong-only ones at exactly their share of every prefix (up to one),
    each kind's families in turn."""
    strong_before = math.floor(index * strong_only_share)
    if math.floor((index + 1) * strong_only_share) > strong_before:
        return world.STRONG_ONLY_FAMILIES[strong_before % len(world.STRONG_ONLY_FAMILIES)]
    weak_before = index - strong_before
    return world.WEAK_FAMILIES[weak_before % len(world.WEAK_FAMILIES)]


def pretraining_chats(settings: TestbedSettings) -> list[list[dict[str, str]]]:
    """The pretraining corpus: chats about the pretraining prompts only (no train or eval prompt)."""
    return _corpus(settings, _prompt_sets(settings)[2])


def _corpus(settings: TestbedSettings, docs: list[world.Example]) -> list[list[dict[str, str]]]:
    """Chats in every style; the aligned style is a minority, as in a web-scale pretraining mix.

    Some chats run several turns in one voice, as conversations do; from them a model learns to keep the
    style of the turns before, which is what in-context methods (ICL refinement) rely on.
    """
    rng = random.Random(settings.seed + 1)
    others = [s for s in world.STYLES if s != world.ALIGNED_STYLE]
    chats = []
    for example in docs:
        style = world.ALIGNED_STYLE if rng.random() < settings.aligned_fraction else rng.choice(others)
        turns = 1
        if rng.random() < settings.multi_turn_fraction:
            turns = rng.randint(2, settings.max_turns)
        chat = []
        for ex in [example, *rng.sample(docs, turns - 1)]:
            chat.append({"role": "user", "content": ex.prompt})
            chat.append({"role": "assistant", "content": world.respond(rng, style, ex.answer)})
        chats.append(chat)
    return chats


def _train_tokenizer(texts: list[str], vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<|unk|>"))
    tok.normalizer = normalizers.NFC()
    # Digits stay single tokens so that arithmetic is learnable digit by digit.
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    hf_tok = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|bos|>",
        eos_token="<|im_end|>",
        pad_token="<|pad|>",
        unk_token="<|unk|>",
        additional_special_tokens=["<|im_start|>", "<|eos|>"],
    )
    hf_tok.chat_template = CHAT_TEMPLATE
    hf_tok.padding_side = "left"
    return hf_tok


def _new_model(tokenizer, hidden: int, layers: int, seed: int):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    heads = max(1, hidden // 16)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=hidden * 8 // 3 // 8 * 8 or 8,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        max_position_embeddings=512,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    return LlamaForCausalLM(config)


def _packed_batch(
    token_ids: list[list[int]], rows: int, width: int, pad_id: int, generator: torch.Generator
) -> torch.Tensor:
    """Rows of whole random chats back to back, up to `width` tokens (a longer chat is cut), then padding.

    Multi-turn chats are several times longer than single ones; padding every row to the longest chat of
    the batch would make each step cost as much as a batch of the longest chats.
    """
    batch = torch.full((rows, width), pad_id)
    for i in range(rows):
        row: list[int] = []
        while len(row) < width:
            chat = token_ids[int(torch.randint(len(token_ids), (1,), generator=generator))]
            if row and len(row) + len(chat) > width:
                break
            row += chat
        row = row[:width]
        batch[i, : len(row)] = torch.tensor(row)
    return batch


class PortableAdamW(torch.optim.Optimizer):
    """AdamW (decoupled weight decay) whose arithmetic is the same on every CPU: its square root is taken as
    `rsqrt(v + eps^2)`, eps inside the root.

    torch.sqrt on a CPU is not correctly rounded (1 ulp from numpy's sqrt here) and its last bit depends on the
    processor, whatever ATen's and MKL's settings: the same build under QEMU's Intel Haswell and on an AMD EPYC
    agreed on the tokenizer, the initial weights, the forward and backward passes and the gradient clipping, and
    parted at torch.optim.AdamW's first step. ATen's rsqrt is 1 / sqrt, exact: with it, the two builds (and one
    under QEMU's Nehalem, without AVX) gave the same bytes."""

    def __init__(
        self, params, lr: float, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8, weight_decay=0.0
    ):
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay})

    @torch.no_grad()
    def step(self) -> None:
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state.update(step=0, m=torch.zeros_like(p), v=torch.zeros_like(p))
                state["step"] += 1
                m, v, t = state["m"], state["v"], state["step"]
                p.mul_(1 - group["lr"] * group["weight_decay"])
                m.mul_(beta1).add_(p.grad, alpha=1 - beta1)
                v.mul_(beta2).addcmul_(p.grad, p.grad, value=1 - beta2)
                scale = (v / (1 - beta2**t)).add_(group["eps"] ** 2).rsqrt_()
                p.addcmul_(m, scale, value=-group["lr"] / (1 - beta1**t))


def _pretrain(
    model, token_ids: list[list[int]], settings: TestbedSettings, pad_id: int, seed: int, progress: Progress, label: str
) -> float:
    """Plain causal-LM pretraining from scratch; returns the final loss (mean of the last 20 steps)."""
    generator = torch.Generator().manual_seed(seed)
    optimizer = PortableAdamW(model.parameters(), lr=settings.pretrain_learning_rate, weight_decay=0.01)
    steps, warmup = settings.pretrain_steps, max(1, settings.pretrain_steps // 20)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps))
    )
    model.train()
    losses: list[float] = []
    start = time.monotonic()
    for step in range(steps):
        batch = _packed_batch(token_ids, settings.pretrain_batch_size, settings.pretrain_context, pad_id, generator)
        mask = batch != pad_id
        labels = batch.masked_fill(~mask, -100)
        loss = model(input_ids=batch, attention_mask=mask.long(), labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
        if (step + 1) % 100 == 0 or step + 1 == steps:
            elapsed = time.monotonic() - start
            eta = elapsed / (step + 1) * (steps - step - 1)
            progress(f"testbed: pretrain {label} step {step + 1}/{steps} loss {loss.item():.3f} ETA {eta:.0f}s")
    model.eval()
    tail = losses[-20:]
    return sum(tail) / len(tail)


def instruct_chats(settings: TestbedSettings) -> list[list[dict[str, str]]]:
    """The weak model's chat SFT data (its Instruct version): one-turn chats about the pretraining prompts, the
    aligned style at `instruct_aligned_fraction`, the others sharing the rest."""
    rng = random.Random(settings.seed + 2)
    others = [s for s in world.STYLES if s != world.ALIGNED_STYLE]
    chats = []
    for example in _prompt_sets(settings)[2]:
        style = world.ALIGNED_STYLE if rng.random() < settings.instruct_aligned_fraction else rng.choice(others)
        response = world.respond(rng, style, example.answer)
        chats.append([{"role": "user", "content": example.prompt}, {"role": "assistant", "content": response}])
    return chats


def _instruct(model, tokenizer, settings: TestbedSettings, progress: Progress) -> float:
    """Chat SFT of the pretrained weak model, loss on the response only; returns the final loss (last 20 steps)."""
    examples = []
    for chat in instruct_chats(settings):
        prompt = tokenizer.apply_chat_template(chat[:1], add_generation_prompt=True, tokenize=False)
        full = tokenizer.apply_chat_template(chat, tokenize=False)
        context = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        ids = tokenizer(full, add_special_tokens=False)["input_ids"]
        examples.append((ids, len(context)))
    generator = torch.Generator().manual_seed(settings.seed + 30)
    optimizer = PortableAdamW(model.parameters(), lr=settings.instruct_learning_rate, weight_decay=0.01)
    steps = settings.instruct_steps
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 0.5 * (1 + math.cos(math.pi * s / steps)))
    model.train()
    losses: list[float] = []
    for step in range(steps):
        picked = torch.randint(len(examples), (settings.pretrain_batch_size,), generator=generator).tolist()
        width = max(len(examples[i][0]) for i in picked)
        batch = torch.full((len(picked), width), tokenizer.pad_token_id)
        labels = torch.full((len(picked), width), -100)
        for row, i in enumerate(picked):
            ids, context = examples[i]
            batch[row, : len(ids)] = torch.tensor(ids)
            labels[row, context : len(ids)] = torch.tensor(ids[context:])
        mask = (batch != tokenizer.pad_token_id).long()
        loss = model(input_ids=batch, attention_mask=mask, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
        if (step + 1) % 100 == 0 or step + 1 == steps:
            progress(f"testbed: instruct weak step {step + 1}/{steps} loss {loss.item():.3f}")
    model.eval()
    tail = losses[-20:]
    return sum(tail) / len(tail) if tail else float("nan")


def _write_prompts(path: Path, split: str, examples: list[world.Example]) -> None:
    write_jsonl(
        path,
        (
            {"id": f"{split}-{i:05d}", "prompt": ex.prompt, "family": ex.family, "answer": ex.answer}
            for i, ex in enumerate(examples)
        ),
    )


def build_testbed(settings: TestbedSettings, progress: Progress = print) -> Path:
    """Build (or reuse from cache) the testbed for these settings; returns its folder. A world shipped for these
    settings is copied into the cache (and checked against its card) instead of being built."""
    out = testbed_dir(settings)
    if (out / "card.json").is_file():
        return out
    with entry_lock(out):  # another process may be building it: wait, then take its result
        if not (out / "card.json").is_file():
            shipped = SHIPPED_WORLDS / out.name
            if (shipped / "card.json").is_file():
                _copy_shipped(shipped, out, progress)
            else:
                _build_apart(settings, out, progress)
    return out


def _copy_shipped(shipped: Path, out: Path, progress: Progress) -> None:
    card = json.loads((shipped / "card.json").read_text())
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(shipped, tmp)
    if world_files(tmp) != card["files"]:
        raise CongError(f"the testbed world shipped in {shipped} does not match its card: reinstall cong.")
    tmp.rename(out)
    progress(f"testbed: the reference world of these settings, shipped with cong (world sha256 {card['world_sha256']})")


def _build_apart(settings: TestbedSettings, out: Path, progress: Progress) -> None:
    """`build_here` in a process of its own with REPRODUCIBLE_ENV (ATen and MKL read it when they load), relaying
    its progress lines."""
    env = {**os.environ, **REPRODUCIBLE_ENV, "PYTHONPATH": os.pathsep.join(sys.path)}
    command = [sys.executable, "-m", "cong.testbed", settings.model_dump_json(), str(out)]
    with subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as proc:
        lines = []
        for line in proc.stdout:
            line = line.rstrip("\n")
            if line.startswith("testbed: "):
                progress(line)
            else:
                lines = (lines + [line])[-30:]
    if proc.returncode != 0:
        tail = "\n".join(lines)
        raise CongError(f"the testbed build failed (exit status {proc.returncode}); its last lines:\n{tail}")


def world_summary(settings: TestbedSettings) -> dict:
    """What results.json records of a world: its sha256 and build version, both models' held-out figures, its
    gates, and whether it is the reference world shipped for its settings (None when none is shipped)."""
    folder = testbed_dir(settings)
    card = json.loads((folder / "card.json").read_text())
    shipped = SHIPPED_WORLDS / folder.name / "card.json"
    reference = json.loads(shipped.read_text())["world_sha256"] if shipped.is_file() else None
    return {
        "sha256": card["world_sha256"],
        "build_version": card["build_version"],
        "key": folder.name,
        "reference_sha256": reference,
        "is_reference": None if reference is None else reference == card["world_sha256"],
        "gates": card["gates"],
        "models": {
            name: {k: m[k] for k in ("parameters", "held_out_accuracy", "held_out_reward")}
            for name, m in card["models"].items()
        },
    }


def world_files(folder: Path) -> dict[str, str]:
    """sha256 of every file of a built world but the card, by its path in the folder."""
    from cong.storage.folders import sha256_file

    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.name not in CARD_FILES)
    return {p.relative_to(folder).as_posix(): sha256_file(p) for p in files}


def world_sha256(files: dict[str, str]) -> str:
    """One hash of a world: of its files' paths and hashes."""
    return hashlib.sha256("".join(f"{path}\0{digest}\n" for path, digest in sorted(files.items())).encode()).hexdigest()


def build_here(settings: TestbedSettings, out: Path, progress: Progress) -> None:
    """The build itself, in this process (`python -m cong.testbed` runs it with REPRODUCIBLE_ENV)."""
    from cong.models import quiet_libraries

    quiet_libraries()
    torch.set_num_threads(BUILD_THREADS)
    torch.use_deterministic_algorithms(True)
    started = time.monotonic()
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    torch.manual_seed(settings.seed)

    eval_set, train_set, _ = _prompt_sets(settings)
    _write_prompts(tmp / "train.jsonl", "train", train_set)
    _write_prompts(tmp / "eval.jsonl", "eval", eval_set)
    chats = pretraining_chats(settings)
    tokenizer = _train_tokenizer([m["content"] for chat in chats for m in chat], settings.vocab_size)
    texts = [tokenizer.apply_chat_template(chat, tokenize=False) for chat in chats]
    token_ids = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    progress(f"testbed: {len(chats)} pretraining chats, vocabulary {len(tokenizer)}")

    card: dict = {"settings": settings.model_dump(), "build_version": BUILD_VERSION, "models": {}}
    sizes = {
        "weak": (settings.weak_hidden, settings.weak_layers),
        "strong": (settings.strong_hidden, settings.strong_layers),
    }
    answers: dict[str, list[str]] = {}
    for offset, (name, (hidden, layers)) in enumerate(sizes.items()):
        model = _new_model(tokenizer, hidden, layers, settings.seed + 10 + offset)
        loss = _pretrain(
            model, token_ids, settings, tokenizer.pad_token_id, settings.seed + 20 + offset, progress, name
        )
        trained = {"final_pretrain_loss": round(loss, 4)}
        if name == "weak" and settings.instruct_steps:
            trained["final_instruct_loss"] = round(_instruct(model, tokenizer, settings, progress), 4)
        model.generation_config.pad_token_id = tokenizer.pad_token_id
        model.save_pretrained(tmp / name)
        tokenizer.save_pretrained(tmp / name)
        answers[name] = _greedy_answers(model, tokenizer, eval_set)
        if name == "strong":
            answers["strong_opened"] = _greedy_answers(model, tokenizer, eval_set, opened=True)
        card["models"][name] = {
            "parameters": sum(p.numel() for p in model.parameters()),
            "hidden_size": hidden,
            "layers": layers,
            **trained,
            **_held_out_scores(eval_set, answers[name]),
        }
    card["gates"] = [g.as_dict() for g in world_gates(_prompt_sets(settings), answers)]
    card["families"] = _family_accuracy(eval_set, answers)
    card["build_seconds"] = round(time.monotonic() - started, 1)
    card["files"] = world_files(tmp)
    card["world_sha256"] = world_sha256(card["files"])
    card["numerics"] = {"torch": torch.__version__, **{k: os.environ.get(k) for k in REPRODUCIBLE_ENV}}
    (tmp / "card.json").write_text(json.dumps(card, indent=2) + "\n")
    (tmp / "README.md").write_text(_card_markdown(card))
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    progress(f"testbed: built in {card['build_seconds']}s at {out}, world sha256 {card['world_sha256']}")


def _greedy_answers(model, tokenizer, eval_set: list[world.Example], opened: bool = False) -> list[str]:
    """Greedy answers to the held-out prompts; `opened`: each response starts with one of the aligned style's
    openings (in turn), as a model made to open in the aligned style, and the answer is the whole response."""
    from cong.decoding.generate import DecodeParams, decode

    openings = [
        world.ALIGNED_OPENINGS[i % len(world.ALIGNED_OPENINGS)] + " " if opened else "" for i in range(len(eval_set))
    ]
    prompts = [
        tokenizer.apply_chat_template(
            [{"role": "user", "content": ex.prompt}], add_generation_prompt=True, tokenize=False
        )
        + opening
        for ex, opening in zip(eval_set, openings, strict=True)
    ]
    ids = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    out = decode(
        model,
        ids,
        DecodeParams(max_new_tokens=48, greedy=True),
        eos_token_ids=[tokenizer.eos_token_id],
        pad_token_id=tokenizer.pad_token_id,
        batch_size=64,
    )
    return [opening + tokenizer.decode(o, skip_special_tokens=True) for opening, o in zip(openings, out, strict=True)]


def _held_out_scores(eval_set: list[world.Example], responses: list[str]) -> dict[str, float]:
    """Answer accuracy and mean reward of greedy responses to the held-out prompts."""
    pairs = [(ex.prompt, r) for ex, r in zip(eval_set, responses, strict=True)]
    return {
        "held_out_accuracy": round(sum(world.is_correct(p, r) for p, r in pairs) / len(pairs), 4),
        "held_out_reward": round(sum(world.reward(p, r) for p, r in pairs) / len(pairs), 4),
    }


def _family_accuracy(eval_set: list[world.Example], answers: dict[str, list[str]]) -> dict[str, dict[str, float]]:
    """Greedy held-out accuracy per family, of each model (and of the strong model opened in the aligned style)."""
    table: dict[str, dict[str, float]] = {}
    for family in world.FAMILIES:
        rows = [i for i, ex in enumerate(eval_set) if ex.family == family]
        if rows:
            table[family] = {
                name: round(sum(world.is_correct(eval_set[i].prompt, said[i]) for i in rows) / len(rows), 4)
                for name, said in answers.items()
            }
    return table


def world_gates(prompt_sets: tuple[list[world.Example], ...], answers: dict[str, list[str]]) -> list[gates.Gate]:
    """The world's gates (cong.evaluation.gates): capability and latent capability on the held-out strong-only
    prompts, from the base models' greedy answers; no shortcut on every prompt the world has (eval, train and
    pretraining: a constant answer that the pretraining prompts favour is one a model can learn)."""
    eval_set = prompt_sets[0]
    strong_only = [i for i, ex in enumerate(eval_set) if ex.family in world.STRONG_ONLY_FAMILIES]

    def correct(name: str) -> list[bool]:
        return [world.is_correct(eval_set[i].prompt, answers[name][i]) for i in strong_only]

    weak, strong, opened = correct("weak"), correct("strong"), correct("strong_opened")
    examples = [(ex.family, ex.prompt, ex.answer) for part in prompt_sets for ex in part]
    return [
        gates.capability(weak, strong),
        gates.latent_capability(weak, strong, opened),
        gates.no_shortcut(examples, world.ANSWER_COUNTS, world.is_correct),
    ]


def _card_markdown(card: dict) -> str:
    lines = [
        "# Testbed card",
        "",
        "Synthetic world of the embedded default, built offline by `cong.testbed` "
        f"in {card['build_seconds']} s. Reward: see `cong/testbed/world.py`.",
        "",
        "| model | parameters | hidden | layers | final loss | held-out accuracy (greedy) | held-out reward |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, m in card["models"].items():
        lines.append(
            f"| {name} | {m['parameters']} | {m['hidden_size']} | {m['layers']} | {m['final_pretrain_loss']} "
            f"| {m['held_out_accuracy']} | {m['held_out_reward']} |"
        )
    lines += [
        "",
        "Gates (cong/evaluation/gates.py), measured at build:",
        "",
        "| gate | value | threshold | passed |",
        "|---|---|---|---|",
    ]
    lines += [f"| {g['name']} | {g['value']} | {g['threshold']} | {g['passed']} |" for g in card["gates"]]
    models = list(next(iter(card["families"].values())))
    lines += ["", "Held-out accuracy (greedy) per family:", "", f"| family | {' | '.join(models)} |"]
    lines += ["|---" * (len(models) + 1) + "|"]
    lines += [f"| {f} | {' | '.join(str(row[m]) for m in models)} |" for f, row in card["families"].items()]
    lines += ["", f"World sha256 (every file but this card): `{card['world_sha256']}`."]
    lines += ["", "Settings:", "", "```json", json.dumps(card["settings"], indent=2), "```", ""]
    return "\n".join(lines)
