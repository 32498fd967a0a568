"""Caption-writing stages: ``compose_caption`` (strategy A, rules over evidence),
``vlm_caption`` (strategy B, a vision-language model writes N candidates) and
``altogether_caption`` (our alt-text re-aligning captioner, in one or more rounds)."""

from __future__ import annotations

import warnings
from dataclasses import asdict
from types import SimpleNamespace

from recaption.imaging import decode_for_model
from recaption.limits import MAX_TEXT_CHARS, MAX_TEXTS
from recaption.models.altogether import AltogetherCaptioner, checkpoint_folder
from recaption.models.captioner import Sampling, ServiceUnavailable
from recaption.models.clip import ClipScorer
from recaption.models.embedding_cache import CachedImageEmbeddings, cache_folder_of
from recaption.models.hf import ModelLoadError, checkpoint_hash, resolve_device, resolve_dtype
from recaption.models.person_names import load_parser
from recaption.models.vlm import load_captioner
from recaption.record import Caption, Pair
from recaption.stages.base import (
    CHECKED_IMAGES,
    HF_MODEL_NEEDS,
    MODEL_ON_CPU,
    MODEL_ON_GPU,
    Resources,
    Stage,
    StageError,
    SystematicFailure,
    model_on,
    register,
)
from recaption.stages.text import SensitiveCheck
from recaption.text.alt_context import split_alt_texts
from recaption.text.clean import says_nothing
from recaption.text.clip_tokens import CONTEXT_LENGTH, clip_tokenizer
from recaption.text.compose import Evidence, Label, compose, tag_agreement
from recaption.text.prompts import TEMPLATES, check_template, render
from recaption.text.vlm_output import tidy_generated

VARIANTS = ("short", "long")



def evidence_of(pair: Pair) -> Evidence:
    """What the earlier stages learnt about a pair, in the form the writer takes."""
    i = pair.selected_alt_index()
    alt = pair.captions[i].text if i is not None else ""
    return Evidence(
        alt_text=alt,
        labels=[Label(t["label"], t["noun"], float(t["p"]), t.get("kind", ""), t.get("class")) for t in pair.tags("classify")],
        ocr=[t["text"] for t in pair.tags("ocr")],
        colourfulness=pair.scores.get("colourfulness"),
        white_border=pair.scores.get("white_border"),
        faces=int(pair.scores.get("faces") or 0),
        text_area_share=pair.scores.get("text_area_share"),
        flat_share=pair.scores.get("flat_share"),
    )


@register
class ComposeCaption(Stage):
    """Write captions from the cleaned alt-text, classifier labels and OCR text.

    ``short`` fits CLIP's 77 tokens (at most ``short_tags`` labels), ``long`` is for
    generative models (more labels and text, up to ``long_max_tokens``). Each variant is a
    caption with ``source="rules"`` and its parameters; ``select`` picks the one that becomes
    the training caption (``none`` leaves the selection alone). ``scores.tag_agreement`` on
    the pair says how much of the classifier's belief the alt-text already states: where the
    alt-text says "cat" and the classifier "golden retriever", the alt-text's concept is kept
    and the agreement is low.
    """

    name = "compose_caption"
    provides = ("captions:rules", "score:tag_agreement")
    requires = (("captions:alt-text", "tags:ocr", "tags:classify", "tags:nsfw"),)  # something to write from
    batch_size = 256

    def __init__(
        self,
        *,
        variants: list[str] | None = None,
        select: str = "short",
        confident: float = 0.6,
        hedge_min: float = 0.3,
        short_tags: int = 1,
        long_tags: int = 3,
        short_max_tokens: int = CONTEXT_LENGTH,
        long_max_tokens: int = 200,
        no_evidence: str = "reject",
        alt_context: bool = True,
    ) -> None:
        super().__init__()
        self.alt_context = alt_context  # tell "family photo" / "our trip" (context only) from content
        if no_evidence not in ("reject", "keep"):
            raise StageError("compose_caption.no_evidence must be 'reject' or 'keep' (for a captioning model after it)")
        self.no_evidence = no_evidence
        self.variants = list(variants or VARIANTS)
        if not set(self.variants) <= set(VARIANTS) or not self.variants:
            raise StageError(f"compose_caption.variants must be taken from {VARIANTS}")
        if select not in (*self.variants, "none"):
            raise StageError(f"compose_caption.select must be one of {self.variants} or 'none'")
        if not 0 <= hedge_min <= confident <= 1:
            raise StageError("compose_caption needs 0 <= hedge_min <= confident <= 1")
        self.select = select
        self.confident, self.hedge_min = confident, hedge_min
        self.limits = {"short": (short_tags, short_max_tokens, 6), "long": (long_tags, long_max_tokens, 30)}

    def setup(self) -> None:
        self.count = clip_tokenizer().count
        # spaCy's parser: the articles, and (alt_context) the alt-texts that only name an occasion.
        # Without a spaCy pipeline, subjects stay as written and every alt-text is content.

        try:
            self.parser = load_parser()
        except (ImportError, ValueError):
            self.parser = None

    def _set_context_aside(self, batch: list[Pair]) -> None:
        """Unselect alt-texts that only name an occasion or the photo itself; record the context."""
        chosen = [(p, c) for p in batch for c in p.captions if c.selected and c.source == "alt-text"]
        if not chosen or self.parser is None or not self.alt_context:
            return
        for (pair, cap), parts in zip(chosen, split_alt_texts([c.text for _, c in chosen], self.parser)):
            if parts.context:
                pair.meta["alt_context"] = parts.context
            if not parts.names_content:
                cap.selected = False
                self.stat("alt_text_only_context")

    def process(self, batch: list[Pair]) -> None:
        self._set_context_aside(batch)
        for pair in batch:
            wrote = self._write(pair)
            for cap in pair.captions:  # "Image!" is never a training caption
                if cap.selected and says_nothing(cap.text):
                    cap.selected = False
                    self.stat("content_free_unselected")
            if self.no_evidence == "reject" and not wrote and not any(c.selected for c in pair.captions):
                left = [n["left"] for n in (pair.meta.get("cleaning") or {}).get("nothing_left", []) if n.get("left")]
                left += pair.meta.get("alt_context", [])
                said = f"the alt-text says only {left[0]!r}" if left else "no usable alt-text"
                pair.reject_with(self.name, "no_evidence", f"nothing to write from: {said}, and no tagger saw anything confident enough")

    def _write(self, pair: Pair) -> bool:
        """Add the variants' captions; False where the evidence says nothing."""
        ev = evidence_of(pair)
        if not ev.alt_text and not ev.labels and not ev.ocr and not ev.faces:
            return False
        pair.scores["tag_agreement"] = tag_agreement(ev)
        parent = pair.selected_alt_index()
        models = pair.tag_models()
        for variant in self.variants:
            max_tags, max_tokens, ocr_words = self.limits[variant]
            made = compose(ev, self.count, max_tokens, max_tags, ocr_words, self.confident, self.hedge_min, self.parser)
            if made.contradicted:  # the classifier is sure the alt-text names what is not there
                pair.meta["alt_contradicted"] = made.contradicted
                if parent is not None:
                    self.stat("alt_text_contradicted")
                    pair.captions[parent].selected = False
                    parent = None
            if not made.says_anything:
                return variant != self.variants[0]  # "a photo" alone: no variant would say more
            if variant == self.select:
                pair.select(None)
            pair.captions.append(
                Caption(
                    text=made.text,
                    source="rules",
                    round=1,
                    parent=parent,
                    params={"variant": variant, "prompt": made.prompt, "tags": made.tags, "hedged": made.hedged, "ocr": made.ocr},
                    model_hash=";".join(models) or None,
                    selected=variant == self.select,
                )
            )
        return True


@register
class VlmCaption(Stage):
    """Write ``n`` candidate captions per image with a vision-language model (strategy B).

    ``model`` is a hub id or a checkpoint folder; the family (BLIP-2, LLaVA, LLaVA-NeXT,
    Qwen2-VL, or any image-text-to-text model with a chat template) is read from its config.
    ``template``: ``plain``, ``faithful`` (describe only what is visible) or ``realign`` (the
    alt-text, OCR text and labels are given to the model to keep, correct or drop); ``prompt``
    is a template of one's own with the same fields. Each candidate is a caption with
    ``source="vlm:<model>"``, its sampling parameters and candidate index, tidied (prompt
    echo, chat artefacts, "The image shows" openings, a cut-off last sentence) and checked for
    sensitive attributes and names before it is stored.
    """

    name = "vlm_caption"
    provides = ("captions:vlm", "score:vlm_candidates")
    requires = (CHECKED_IMAGES,)
    resources = MODEL_ON_GPU
    batch_size = 8
    needs = HF_MODEL_NEEDS

    def __init__(
        self,
        *,
        model: str = "Salesforce/blip2-opt-2.7b",
        template: str = "faithful",
        prompt: str | None = None,
        n: int = 1,
        temperature: float = 0.0,
        top_p: float = 1.0,
        repetition_penalty: float = 1.0,
        max_new_tokens: int = 60,
        seed: int = 0,
        batch_size: int = 8,
        backend: str = "transformers",
        device: str = "auto",
        dtype: str = "auto",
        quantization: str = "none",
        base_url: str | None = None,
        api_key_env: str = "OPENAI_API_KEY",
        concurrency: int = 8,
        request_timeout: float = 60.0,
        max_retries: int = 4,
        gpu_memory_utilization: float = 0.85,
        max_model_len: int | None = None,
        tensor_parallel_size: int = 1,
        enforce_eager: bool = False,
        engine_args: dict | None = None,
        starting_prompt: str = "a photo of",
        select: bool = False,
        names: bool = True,
    ) -> None:
        super().__init__()

        if prompt is None and template not in TEMPLATES:
            raise StageError(f"vlm_caption.template must be one of {sorted(TEMPLATES)}, or give a prompt of your own")
        self.template = prompt if prompt is not None else TEMPLATES[template]
        self.template_name = "custom" if prompt is not None else template
        try:
            check_template(self.template)
            self.sampling = Sampling(n, temperature, top_p, repetition_penalty, max_new_tokens, seed)
            self.sampling.check()
        except ValueError as exc:
            raise StageError(f"vlm_caption: {exc}") from exc
        if batch_size < 1:
            raise StageError("vlm_caption.batch_size must be at least 1")
        self.batch_size = batch_size
        self.model_name, self.backend, self.device, self.dtype, self.quantization = model, backend, device, dtype, quantization
        # The openai backend's server; its key is read from the environment variable, never the recipe.
        self.server = {"base_url": base_url or "", "api_key_env": api_key_env, "concurrency": concurrency, "timeout": request_timeout, "max_retries": max_retries}
        # The vllm backend's engine (vllm.LLM keyword arguments); engine_args for any other option.
        self.engine = {
            "gpu_memory_utilization": gpu_memory_utilization, "tensor_parallel_size": tensor_parallel_size, "enforce_eager": enforce_eager,
            **({"max_model_len": max_model_len} if max_model_len else {}), **(engine_args or {}),
        }
        self.starting_prompt, self.select, self.names = starting_prompt, select, names

    def wants(self) -> Resources:
        """A GPU (one per tensor-parallel rank for vLLM) where the model runs here; none where a
        server runs it (``backend: openai``) or the recipe says ``device: cpu``."""
        if self.backend == "openai" or self.device == "cpu":
            return MODEL_ON_CPU
        return Resources(gpus=self.engine["tensor_parallel_size"] if self.backend == "vllm" else 1, loads_model=True)

    def setup(self) -> None:
        try:
            server = self.server if self.backend == "openai" else None
            engine = self.engine if self.backend == "vllm" else None
            self.captioner = load_captioner(self.model_name, self.backend, self.device, self.dtype, self.quantization, server, engine)
        except ModelLoadError as exc:
            raise StageError(f"vlm_caption.model: {exc}") from exc
        self._check_context()
        self.source = "vlm:" + self.model_name.rstrip("/").split("/")[-1]
        self.checker = SensitiveCheck(names=self.names)
        self.checker.prepare()  # a names model that will not load stops the run here, not per record

    def _check_context(self) -> None:
        """Refuse a prompt (with its image, before any alt-text) and answer that cannot fit the
        model's context: every record would fail inside generate with an index error."""

        context = getattr(self.captioner, "context_length", lambda: None)()
        if not context:
            return
        prompt = self.captioner.format_prompt(render(self.template, "", "", []))
        need = self.captioner.prompt_length(prompt)
        if need + self.sampling.max_new_tokens > context:
            raise StageError(
                f"vlm_caption: the prompt takes {need} tokens with its image, and max_new_tokens adds "
                f"{self.sampling.max_new_tokens}: more than the {context} tokens of {self.model_name}'s context. "
                "Use a shorter template or prompt, or lower vlm_caption.max_new_tokens"
            )

    def process(self, batch: list[Pair]) -> None:
        pairs, images = decode_for_model(batch, 224, self.name)
        if not pairs:
            return
        prompts = []
        for pair in pairs:
            ev = evidence_of(pair)
            instruction = render(self.template, ev.alt_text, ev.ocr, [lb.name for lb in ev.labels])
            prompts.append(self.captioner.format_prompt(instruction))

        dropped_before = getattr(self.captioner, "extra_choices_dropped", 0)
        try:
            outputs = self.captioner.generate(images, prompts, self.sampling)
        except ServiceUnavailable as exc:  # the server, not these records: the run stops
            raise SystematicFailure(str(exc)) from exc
        dropped = getattr(self.captioner, "extra_choices_dropped", 0) - dropped_before
        if dropped:
            self.stat("extra_choices_dropped", dropped)  # a server that sent more than n
        params = {"template": self.template_name, "backend": self.backend, **asdict(self.sampling)}
        for pair, prompt, texts in zip(pairs, prompts, outputs):
            if isinstance(texts, Exception):  # the server refused this record's request alone
                pair.reject_with(self.name, "refused_by_server", str(texts)[:300])
                continue
            # What any backend answers stays within what our readers accept: n candidates at
            # most (fewer are flagged on the pair), the record's captions at most MAX_TEXTS,
            # each text (and its raw form) at most MAX_TEXT_CHARS.
            texts = texts[: max(0, min(self.sampling.n, MAX_TEXTS - len(pair.captions)))]
            if len(texts) < self.sampling.n:
                pair.meta["vlm_candidates_missing"] = self.sampling.n - len(texts)
                self.stat("candidates_missing", self.sampling.n - len(texts))
            parent = pair.selected_alt_index()
            first = len(pair.captions)
            for j, raw in enumerate(texts):
                raw = raw[:MAX_TEXT_CHARS]
                text = tidy_generated(raw, prompt, self.starting_prompt)
                extra = {"raw": raw} if text != raw.strip() else {}
                pair.captions.append(
                    Caption(text, self.source, round=1, parent=parent, params={**params, "candidate": j, **extra}, model_hash=self.captioner.model_hash)
                )
            # An empty answer is no candidate; the pair keeps what it had (nothing is lost).
            pair.captions[first:] = [c for c in pair.captions[first:] if c.text]
            pair.scores["vlm_candidates"] = len(pair.captions) - first
            if self.select and len(pair.captions) > first:
                pair.select(first)
        # The guideline's checker on every candidate now, so a selection never sees a raw one.
        self.checker.run_for(self, pairs)


@register
class AltogetherCaption(Stage):
    """Re-align alt-texts with a captioner that ``recaption train captioner`` wrote.

    ``checkpoint``: the training output folder (or its ``model/``; default ``runs/altogether``,
    where a training config named ``altogether`` writes). ``alt_text: true`` gives
    the captioner the pair's alt-text, ``false`` captions from the image alone. With
    ``rounds`` > 1, round n's caption is round n+1's input; every round is stored as a caption
    (``source="altogether:<name>"``, its ``round`` and the ``parent`` it re-aligned). Sampling
    defaults to the paper's (temperature 0.2, top-p 0.7); temperature 0 is greedy. Image
    embeddings come from the checkpoint's frozen encoder through the same cache and
    preprocessing as training. ``select`` makes the last round the training caption.
    """

    name = "altogether_caption"
    provides = ("captions:altogether",)
    requires = (CHECKED_IMAGES,)
    resources = MODEL_ON_GPU
    batch_size = 16
    needs = HF_MODEL_NEEDS

    def __init__(
        self,
        *,
        checkpoint: str = "runs/altogether",
        alt_text: bool = True,
        rounds: int = 1,
        temperature: float = 0.2,
        top_p: float = 0.7,
        max_new_tokens: int | None = None,
        seed: int = 0,
        batch_size: int = 16,
        device: str = "auto",
        dtype: str = "auto",
        cache: str | None = "auto",
        kv_cache: str = "auto",
        select: bool = False,
        names: bool = True,
    ) -> None:
        super().__init__()
        if rounds < 1 or batch_size < 1:
            raise StageError("altogether_caption.rounds and batch_size must be at least 1")
        if kv_cache not in ("auto", "dynamic", "static"):
            raise StageError(f"altogether_caption.kv_cache must be auto, dynamic or static, not {kv_cache!r}")
        self.kv_cache = kv_cache

        self.sampling = Sampling(temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens, seed=seed)
        try:
            self.sampling.check()
        except ValueError as exc:
            raise StageError(f"altogether_caption: {exc}") from exc
        self.checkpoint, self.alt_text, self.rounds = checkpoint, alt_text, rounds
        self.batch_size, self.device, self.dtype, self.select, self.names = batch_size, device, dtype, select, names
        self.cache_setting = cache

    def wants(self) -> Resources:
        return model_on(self.device)

    def setup(self) -> None:
        try:
            folder = checkpoint_folder(self.checkpoint)
            device = resolve_device(self.device)
            self.captioner = AltogetherCaptioner.load(folder, resolve_dtype(self.dtype, device)).to(device)
            self.captioner.train(False)
            # auto: a static KV cache on a GPU (fixed shapes per step, measured faster), the
            # growing one on the CPU, where preallocating every batch to full length only costs.
            self.kv_cache_used = self.kv_cache if self.kv_cache != "auto" else ("static" if device.startswith("cuda") else "dynamic")
            encoder = ClipScorer(self.captioner.config.encoder, device, "float32")  # as in training
        except ModelLoadError as exc:
            raise StageError(f"altogether_caption: {exc}") from exc
        trained_with = self.captioner.config.encoder_hash.split(":")[0]
        if trained_with and encoder.model_hash.split(":")[0] != trained_with:
            warnings.warn(f"altogether_caption: the encoder {encoder.model_hash} is not the one the captioner was trained with ({trained_with})", stacklevel=1)
        self.images = CachedImageEmbeddings(encoder, cache_folder_of(self.cache_setting))
        name = folder.parent.name if folder.name == "model" else folder.name
        self.source = f"altogether:{name}"
        self.model_hash = checkpoint_hash(str(folder), SimpleNamespace(), {"encoder": encoder.model_hash, "dtype": self.dtype})
        self.checker = SensitiveCheck(names=self.names)
        self.checker.prepare()  # a names model that will not load stops the run here, not per record

    def process(self, batch: list[Pair]) -> None:
        pairs, embeddings = self.images.of(batch, self.name)
        if not pairs:
            return
        import torch  # noqa: PLC0415 - torch, loaded only where it is used

        vectors = torch.from_numpy(embeddings)
        alt = [p.selected_alt_index() for p in pairs]
        parents = [a if self.alt_text else None for a in alt]
        inputs = [p.captions[a].text if a is not None else "" for p, a in zip(pairs, parents)]
        s = self.sampling  # one caption per image: n and repetition_penalty do not apply
        decoding = {"temperature": s.temperature, "top_p": s.top_p, "max_new_tokens": s.max_new_tokens, "seed": s.seed}
        params = {"alt_text": self.alt_text, **{k: v for k, v in decoding.items() if v is not None}}
        for round_ in range(1, self.rounds + 1):
            texts = self.captioner.generate(vectors, inputs, **decoding, kv_cache=self.kv_cache_used)
            made: list[int | None] = []
            for pair, text, parent in zip(pairs, texts, parents):
                if text:  # an empty answer is no caption: the next round re-reads this round's input
                    pair.captions.append(Caption(text, self.source, round=round_, parent=parent, params=params, model_hash=self.model_hash))
                made.append(len(pair.captions) - 1 if text else None)
            # The guideline's checker runs before the next round reads a caption: where it
            # edits one (names, sensitive attributes), the edited copy is what goes on.
            self.checker.run_for(self, pairs)
            for i, (pair, k) in enumerate(zip(pairs, made)):
                if k is not None:
                    parents[i] = next((j for j in range(k + 1, len(pair.captions)) if pair.captions[j].parent == k), k)
                    inputs[i] = pair.captions[parents[i]].text
        for pair, last in zip(pairs, parents):
            if self.select and last is not None and pair.captions[last].source == self.source:
                pair.select(last)
