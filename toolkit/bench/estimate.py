"""Memory-fit estimate of a training recipe (and of inference), from its shape alone: no torch, no device.

The estimate follows what the benchmark's own runs hold (`workloads/train.py`: TRL 1.16 SFT/KTO/DPO
with PEFT LoRA, transformers 5), counted tensor by tensor from what autograd saves. The parts:

- weights: 16-bit 2 B, fp32 4 B per parameter. 4-bit NF4/FP4 (bitsandbytes, QLoRA): the decoder's
  linear weights 0.5 B plus one fp32 absmax per 64-block (4/64 B), or with double quantization one
  8-bit absmax per 64-block and one fp32 per 256 of those (1/64 + 4/16384 B); transformers keeps the
  LM head and the embeddings out of the 4-bit conversion, and PEFT's `prepare_model_for_kbit_training`
  upcasts them and the norms to fp32. 8-bit (LLM.int8): 1 B plus an fp32 scale per output row.
- LoRA parameters: r x (in + out) per targeted linear per layer, fp32 (PEFT's autocast_adapter_dtype)
  over a 16-bit base, bf16 over a 4-bit base (TRL casts the adapters to bf16 for QLoRA).
- gradients: the trainable parameters' dtype, trainable parameters only.
- optimizer states: AdamW keeps exp_avg and exp_avg_sq in the parameter dtype (2 x 4 B for fp32
  adapters); the 8-bit bitsandbytes variants 2 x 1 B (paged: the same bytes in unified memory, which
  the driver may evict to host memory under pressure; outside torch's allocator).
- activations saved for backward, per token per layer of a Llama block: both RMSNorms' fp32 input
  and rsqrt, the inputs of the LoRA A matmuls (one shared tensor when the input already has the
  adapter's dtype; under autocast, PEFT casts the input to the adapter's dtype and autocast casts it
  back, so each adapted module keeps its own 16-bit copy), the LoRA B inputs (r each), SDPA's
  q, k, v, output and log-sum-exp (no s x s scores on GPU or CPU; with padding and grouped-query
  attention transformers repeats k and v to all heads, and SDPA converts the boolean mask to an
  additive one per layer), the MLP's gate output, activation and up output (3 x intermediate), and
  with LoRA dropout one dropout output and mask per adapted module. Gemma 2 runs eager attention
  (SDPA has no logit soft-capping): q, k, v plus per score the tanh output, the fp32 softmax and its
  16-bit copy; and four norms per layer. With activation checkpointing only each layer's input is
  kept; one layer is recomputed, with all of the above, during its backward.
- LM head: TRL 1.16 computes the log-probabilities in tiles of 4096 tokens x 32768 vocabulary
  (`trl.kernels.chunked_logprob`), so the batch x sequence x vocabulary logits never exist: on a GPU
  one 16-bit tile (Triton folds it), on the CPU the torch fallback's fp32 temporaries of a tile
  (counted by measurement: 5 tiles forward, 9 backward, 10 with
  Gemma 2's final soft-capping), plus the fp32 gradient of the hidden states.
  Trainers that materialise the logits (LLaMA-Factory, older TRL) add batch x seq x vocab x several
  copies: at 256k vocabulary that is the largest part; here it is not.
- stage factors: DPO runs chosen and rejected as one batch of 2 x batch sequences; KTO's KL batch
  and all reference passes (the base with the adapter disabled) run without grad, so they add only
  one layer's transient memory, while the policy's activations are alive.
- peak transient: the largest of the LM head's forward and backward, one layer's backward (with its
  recomputation under checkpointing), and a no-grad reference layer.

Not counted: the CUDA context and cuBLAS/cuDNN workspaces (outside torch's allocator; about 0.3-1 GiB a
process), allocator fragmentation (the comparison is with `torch.cuda.max_memory_allocated`;
`max_memory_reserved` is higher by the caching allocator's unused blocks, and nvidia-smi shows reserved
+ context), the dataset, tokenizer and Python objects. On the CPU the measured figure is peak RSS, where
glibc keeps freed blocks below its dynamic mmap threshold in the heap: the estimate counts live tensors,
so it reads low against that RSS (measured: 0.63-0.84 of it); with MALLOC_MMAP_THRESHOLD_=65536 freed
blocks go back to the system and the estimate was within -5 % to +3 % of the measured peak on 17 real
TRL loads (SFT, KTO, DPO; Llama and Gemma 2 layouts; with and without checkpointing, padding, LoRA
dropout).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from toolkit.bench import flops, memory_head, model_config
from toolkit.bench.shape import LORA_MODULES, ModelShape

GIB = 2**30
# trl.kernels.chunked_logprob: tokens per projection tile, and the vocabulary width the trainers pass
HEAD_TOKEN_TILE = 4096
HEAD_VOCAB_TILE = 32768
# the CPU (no Triton) fallback of that kernel: fp32 tile-sized temporaries alive at once, by measurement
CPU_HEAD_TILES_FORWARD = 5
CPU_HEAD_TILES_BACKWARD = 9
# bitsandbytes blockwise quantization: 64 weights per absmax; double quantization: 256 absmax per block
BNB_BLOCK = 64
BNB_DOUBLE_BLOCK = 256
EIGHT_BIT_OPTIMIZERS = ("8bit", "bnb")
NOT_COUNTED = (
    "not counted: CUDA context and library workspaces (~0.3-1 GiB a process), allocator fragmentation "
    "(reserved - allocated), dataset and Python objects; on the CPU, heap memory "
    "glibc keeps after frees (RSS reads higher than live tensors)"
)


@dataclass(frozen=True)
class Part:
    name: str
    bytes: float
    formula: str  # in words, with the numbers that went in

    def as_dict(self) -> dict:
        return {"name": self.name, "bytes": int(self.bytes), "formula": self.formula}


@dataclass(frozen=True)
class Estimate:
    parts: tuple[Part, ...]
    device: str
    notes: tuple[str, ...] = ()
    inputs: dict = field(default_factory=dict)

    @property
    def total(self) -> float:
        return sum(p.bytes for p in self.parts)

    @property
    def largest(self) -> Part:
        return max(self.parts, key=lambda p: p.bytes)

    def part(self, name: str) -> Part:
        return next(p for p in self.parts if p.name == name)

    def as_dict(self) -> dict:
        return {
            "total_bytes": int(self.total),
            "device": self.device,
            "parts": [p.as_dict() for p in self.parts],
            "largest_part": self.largest.name,
            "inputs": self.inputs,
            "notes": list(self.notes),
            "not_counted": NOT_COUNTED,
        }


@dataclass(frozen=True)
class _Layout:
    """Bytes per element of each kind of tensor in a run (what the device and recipe make of them)."""

    weight: int  # base weights that are not quantized
    act: int  # residual stream, linear outputs, MLP activations
    attn: int  # attention kernel tensors (q, k, v, output, mask, scores)
    compute: int  # matmul inputs under autocast (the copies autocast makes)
    adapter: int  # LoRA parameters (and their gradients)
    mask: int  # a dropout mask element (bool on CUDA, the input dtype on the CPU)
    cpu_head: bool  # TRL's log-prob kernel in torch ops (no Triton): fp32 tile temporaries
    what: str


def _layout(recipe, device: str, trainer: str = "trl") -> _Layout:
    if recipe.quantized and device != "cpu" and trainer in ("llamafactory", "unsloth"):
        # LLaMA-Factory and Unsloth do not call prepare_model_for_kbit_training: embeddings, LM head and
        # norms stay 16-bit, so the residual stream is 16-bit; LF upcasts the trainable adapters to fp32
        adapter = 2 if trainer == "unsloth" else 4
        what = (
            f"{recipe.quantization_bit}-bit base, 16-bit embeddings/head/norms ({trainer}), "
            f"{adapter}-B adapters"
        )
        return _Layout(2, 2, 2, 2, adapter, 1, False, what)
    if recipe.quantized and device == "cpu":  # bitsandbytes' CPU backend: fp32 compute, no autocast
        what = f"{recipe.quantization_bit}-bit base on the CPU (bitsandbytes), fp32 compute, bf16 LoRA"
        return _Layout(4, 4, 4, 2, 2, 2, True, what)  # TRL's trainers cast QLoRA adapters to bf16
    if recipe.quantized:  # fp32 embeddings/norms -> fp32 residual; bf16 adapters; SDPA in 16-bit
        c = 2
        return _Layout(4, 4, c, c, c, 1, False, f"{recipe.quantization_bit}-bit base, 16-bit autocast")
    if device == "cpu":  # train.py runs the CPU in fp32 whatever the recipe says
        return _Layout(4, 4, 4, 4, 4, 4, True, "fp32 on the CPU (no autocast)")
    if recipe.precision == "fp32":
        return _Layout(4, 4, 4, 4, 4, 1, False, "fp32 on the GPU")
    adapter = 4 if recipe.finetuning_type == "lora" else 2
    if (
        recipe.finetuning_type != "lora"
        and trainer == "llamafactory"
        and not getattr(recipe, "pure_bf16", False)
    ):
        # LF upcasts trainable parameters to fp32 (cast_trainable_params_to_fp32) unless pure_bf16
        return _Layout(
            4, 2, 2, 2, 4, 1, False, f"fp32 master weights (LLaMA-Factory), autocast {recipe.precision}"
        )
    return _Layout(2, 2, 2, 2, adapter, 1, False, f"{recipe.precision} weights, autocast {recipe.precision}")


def _counts(recipe, shape: ModelShape) -> tuple[int, int]:
    """(decoder linear weights, all weights): from the config (MoE experts, MLA) when it has one."""
    config = recipe.model_config or {}
    if config.get("hidden_size") == shape.hidden_size and config.get("vocab_size"):
        counts = model_config.param_counts(config)
        return counts.linear, counts.total
    h, v = shape.hidden_size, shape.vocab_size
    return flops.matmul_params(shape) - h * v, flops.total_params(shape)


def _weights(recipe, shape: ModelShape, lay: _Layout, trainer: str = "trl") -> Part:
    linear, n = _counts(recipe, shape)
    other = n - linear  # embeddings, LM head (untied), norms
    if not recipe.quantized:
        return Part("weights", n * lay.weight, f"{n / 1e9:.3f} B parameters x {lay.weight} B")
    if recipe.quantization_bit == 4:
        if recipe.double_quantization:
            per = 0.5 + 1 / BNB_BLOCK + 4 / (BNB_BLOCK * BNB_DOUBLE_BLOCK)
            how = "0.5 B + 8-bit absmax per 64 + fp32 per 64x256 (double quantization)"
        else:
            per = 0.5 + 4 / BNB_BLOCK
            how = "0.5 B + fp32 absmax per 64"
    else:
        per, how = 1.0, "1 B (LLM.int8)"
        other += shape.num_hidden_layers * sum(
            o for _, o in flops.linear_shapes(shape).values()
        )  # row scales
    return Part(
        "weights",
        linear * per + other * lay.weight,
        f"{linear / 1e9:.3f} B decoder linear weights x {per:.4f} B ({how}) + {other / 1e9:.3f} B "
        f"embeddings, LM head and norms x {lay.weight} B (kept out of quantization"
        + (
            ", upcast to fp32 by prepare_model_for_kbit_training)"
            if trainer == "trl"
            else f"; {trainer} keeps them 16-bit)"
        ),
    )


def _optimizer_bytes(optim: str, param_bytes: int) -> tuple[float, str]:
    if any(k in optim for k in EIGHT_BIT_OPTIMIZERS):
        paged = " (paged: unified memory, evictable)" if "paged" in optim else ""
        return 2.0, f"2 states x 1 B ({optim}){paged}"
    if "sgd" in optim:
        return float(param_bytes), f"1 momentum state x {param_bytes} B ({optim})"
    return 2.0 * param_bytes, f"2 states x {param_bytes} B ({optim}: exp_avg, exp_avg_sq)"


def _trainable(recipe, shape: ModelShape, lay: _Layout) -> tuple[int, int]:
    """(trainable parameters, bytes per trainable parameter)."""
    if recipe.finetuning_type == "full":
        return _counts(recipe, shape)[1], lay.weight
    config = recipe.model_config or {}
    if model_config.n_experts(config):
        return model_config.lora_params(config, recipe.lora_rank, recipe.lora_target), lay.adapter
    return flops.lora_params(shape, recipe.lora_rank, recipe.lora_target), lay.adapter


def _per_token_layer(recipe, shape: ModelShape, lay: _Layout, seq: int, padded: bool) -> tuple[float, str]:
    """Bytes autograd saves per token in one decoder layer during a training forward, and the sum in words."""
    h, f = shape.hidden_size, shape.intermediate_size
    q = shape.num_attention_heads * shape.head_dim
    kv = shape.num_key_value_heads * shape.head_dim
    gemma = _model_type(recipe) in ("gemma2", "gemma3", "gemma3_text")
    eager = _model_type(recipe) == "gemma2"
    lora = recipe.finetuning_type == "lora"
    targets = set(recipe.lora_target) if lora else set(LORA_MODULES)
    terms: list[tuple[str, float]] = []

    norms = 4 if gemma else 2
    terms.append((f"{norms} norms x (fp32 input 4h + rsqrt 4)", norms * (4 * h + 4)))

    def inputs(names: tuple[str, ...], width: int, x_bytes: int, saved_elsewhere: bool, label: str) -> None:
        hit = [n for n in names if n in targets]
        if not hit:
            return
        if lora and recipe.lora_dropout > 0:  # each module: its dropout output (as matmul input) and mask
            per = width * (lay.compute + lay.mask)
            terms.append(
                (
                    f"{label}: {len(hit)} x dropout output + mask ({lay.compute}+{lay.mask} B x {width})",
                    len(hit) * per,
                )
            )
            return
        if lora and x_bytes != lay.adapter:  # PEFT casts to the adapter dtype, autocast casts back
            terms.append(
                (
                    f"{label}: {len(hit)} x own {lay.compute}-B copy of the input ({width})",
                    len(hit) * width * lay.compute,
                )
            )
        elif not saved_elsewhere:
            terms.append((f"{label}: shared input {x_bytes} B x {width}", width * x_bytes))

    inputs(("q_proj", "k_proj", "v_proj"), h, lay.act, False, "q/k/v input")
    kv_eff = q if (padded and kv < q) else kv
    if eager:
        scores = shape.num_attention_heads * seq
        per_score = (lay.attn if recipe.model_config.get("attn_logit_softcapping") else 0) + 4
        per_score += lay.attn if lay.attn != 4 else 0
        terms.append((f"eager attention q, k, v ({q}+{q}+{q}) x {lay.attn} B", 3 * q * lay.attn))
        terms.append(
            (f"scores: {shape.num_attention_heads} heads x {seq} keys x {per_score} B", scores * per_score)
        )
        terms.append((f"attention output copy {q} x {lay.attn} B", q * lay.attn))
    else:
        sdpa = (2 * q + 2 * kv_eff) * lay.attn + 4 * shape.num_attention_heads
        terms.append((f"SDPA q, k, v, out ({q}+{kv_eff}+{kv_eff}+{q}) x {lay.attn} B + lse", sdpa))
        if padded:
            terms.append((f"additive mask {seq} x {lay.attn} B", seq * lay.attn))
    inputs(("o_proj",), q, lay.attn, True, "o input")
    inputs(("gate_proj", "up_proj"), h, lay.act, False, "MLP input")
    terms.append((f"gate out, activation, up out 3 x {f} x {lay.act} B", 3 * f * lay.act))
    inputs(("down_proj",), f, lay.act, False, "down input")
    if lora:
        n_mod = len(targets & set(LORA_MODULES))
        b = lay.compute
        terms.append((f"LoRA B inputs {n_mod} x r{recipe.lora_rank} x {b} B", n_mod * recipe.lora_rank * b))
    total = sum(b for _, b in terms)
    return total, "; ".join(f"{t} = {b:.0f}" for t, b in terms)


def _model_type(recipe) -> str:
    return (recipe.model_config or {}).get("model_type", "llama")


def _head(shape: ModelShape, lay: _Layout, rows: int, softcap: bool) -> tuple[float, float, str]:
    """(forward transient, backward transient, words) of TRL's chunked log-prob LM head over `rows` tokens;
    `softcap`: the final logits are soft-capped (Gemma 2), one more tile in the CPU fallback's backward."""
    h, v = shape.hidden_size, shape.vocab_size
    tile_rows, tile_cols = min(rows, HEAD_TOKEN_TILE), min(v, HEAD_VOCAB_TILE)
    grad_hidden = rows * h * 4 + rows * h * lay.act
    if lay.cpu_head:
        tile = tile_rows * tile_cols * 4
        backward_tiles = CPU_HEAD_TILES_BACKWARD + (1 if softcap else 0)
        fwd = CPU_HEAD_TILES_FORWARD * tile
        bwd = backward_tiles * tile + grad_hidden
        words = (
            f"tile {tile_rows} tokens x {tile_cols} vocab x 4 B = {tile / 2**20:.0f} MiB; torch fallback "
            f"(no Triton): {CPU_HEAD_TILES_FORWARD} tiles forward, {backward_tiles} backward "
            "+ fp32 gradient of the hidden states"
        )
        return fwd, bwd, words
    tile = tile_rows * tile_cols * lay.compute
    casts = (tile_cols * h * lay.compute if lay.weight != lay.compute else 0) + (
        tile_rows * h * lay.compute if lay.act != lay.compute else 0
    )
    words = (
        f"Triton: one {lay.compute}-B tile {tile_rows} x {tile_cols} = {tile / 2**20:.0f} MiB"
        + (" + 16-bit copies of the fp32 head's chunk" if casts else "")
        + " + fp32 gradient of the hidden states"
    )
    return tile + casts, tile + casts + grad_hidden, words


def _activations(recipe, shape, lay, per_layer, layer_words, n_seq, seq, trainer) -> Part:
    h, layers = shape.hidden_size, shape.num_hidden_layers
    tokens = n_seq * seq
    head_saved = 4 * h + 4 + h * lay.act + 24  # final norm's fp32 input, the head's hidden copy, stats
    if trainer == "unsloth" or getattr(recipe, "unsloth_gc", False):
        saved = tokens * (2 * h * lay.act + head_saved)
        words = (
            f"Unsloth gradient checkpointing: each layer's input is offloaded to host memory; on the GPU one "
            f"in flight + the next ({tokens} tokens x {h} x {lay.act} B x 2) + head inputs"
        )
    elif recipe.activation_checkpointing:
        saved = tokens * (layers * h * lay.act + head_saved)
        words = (
            f"checkpointing: {layers} layer inputs x {tokens} tokens ({n_seq} x {seq}) x {h} x {lay.act} B "
            f"+ head inputs; one layer recomputed in backward ({per_layer:.0f} B/token: {layer_words})"
        )
    else:
        saved = tokens * (layers * per_layer + head_saved)
        words = (
            f"{layers} layers x {tokens} tokens ({n_seq} x {seq}) x {per_layer:.0f} B/token ({layer_words})"
        )
    return Part("activations", saved, words)


def _transients(recipe, shape, lay, per_layer, n_seq, seq, padded, trainer) -> Part:
    """The largest short-lived allocation: the LM head, one layer's backward, or a no-grad reference layer."""
    h, f = shape.hidden_size, shape.intermediate_size
    tokens = n_seq * seq
    gemma2 = _model_type(recipe) == "gemma2"
    softcap = bool((recipe.model_config or {}).get("final_logit_softcapping"))
    if memory_head.materialises_logits(trainer, recipe):
        logits, words = memory_head.lf_logits_bytes(recipe, n_seq * seq, shape.vocab_size, softcap, trainer)
        candidates = {"LM head logits (materialised)": (logits, words)}
    else:
        head_fwd, head_bwd, head_words = _head(shape, lay, n_seq * max(seq - 1, 1), softcap)
        candidates = {"LM head forward": (head_fwd, head_words), "LM head backward": (head_bwd, head_words)}
    layer_bwd = tokens * (3 * f + 4 * h) * lay.act  # MLP gradients of one layer in flight
    if gemma2:  # eager attention: two gradients of the scores in flight (fp32 softmax)
        score_grads = 4 + 4 + (lay.attn if lay.attn != 4 else 0)
        layer_bwd = max(layer_bwd, tokens * shape.num_attention_heads * seq * score_grads)
    if recipe.activation_checkpointing:
        layer_bwd += tokens * per_layer
    candidates["one layer's backward"] = (
        layer_bwd,
        "gradients of one layer (3 x intermediate + 4 x hidden per token"
        + ("; eager attention: two score-sized gradients" if gemma2 else "")
        + ")"
        + (" + its recomputed activations" if recipe.activation_checkpointing else ""),
    )
    if recipe.stage in ("kto", "dpo"):
        ref_rows = recipe.batch_size * (2 if recipe.stage == "dpo" else 1)
        nograd = ref_rows * seq * ((3 * f + 3 * h) * lay.act + (seq * lay.attn if padded else 0))
        if gemma2:
            nograd += ref_rows * seq * shape.num_attention_heads * seq * (2 * lay.attn + 4)
        candidates["reference forward (no grad)"] = (
            nograd,
            f"one layer of a no-grad pass over {ref_rows} sequences (reference"
            + (" and KL batch" if recipe.stage == "kto" else "")
            + ") while the policy's activations are alive",
        )
    name, (peak, words) = max(candidates.items(), key=lambda kv: kv[1][0])
    return Part("peak transient", peak, f"{name}: {words}")


def _parameter_parts(recipe, shape, lay, trainer) -> list[Part]:
    parts: list[Part] = [_weights(recipe, shape, lay, trainer)]
    if lay.weight == 4 and recipe.finetuning_type != "lora" and not recipe.quantized and lay.act == 2:
        n = _counts(recipe, shape)[1]
        parts.append(
            Part(
                "16-bit weight copies",
                n * 2,
                f"{n / 1e9:.3f} B x 2 B: autocast's 16-bit casts of the fp32 master weights, "
                "saved for backward",
            )
        )
    n_train, p_bytes = _trainable(recipe, shape, lay)
    if recipe.finetuning_type == "lora":
        parts.append(
            Part(
                "LoRA parameters",
                n_train * p_bytes,
                f"{n_train / 1e6:.2f} M = r{recipe.lora_rank} x (in + out) over "
                f"{', '.join(recipe.lora_target)} x {shape.num_hidden_layers} layers"
                + (" (every expert)" if model_config.n_experts(recipe.model_config or {}) else "")
                + f", x {p_bytes} B",
            )
        )
    parts.append(Part("gradients", n_train * p_bytes, f"{n_train / 1e6:.2f} M trainable x {p_bytes} B"))
    opt_per, opt_words = _optimizer_bytes(recipe.optim, p_bytes)
    parts.append(Part("optimizer states", n_train * opt_per, f"{n_train / 1e6:.2f} M x {opt_words}"))
    return parts


def estimate_training(
    recipe, device: str, *, seq_len: int | None = None, padded: bool = True, trainer: str = "trl"
) -> Estimate:
    """Peak memory of one training step of `recipe` on `device` ("cpu", or a GPU: "cuda"), as `trainer`
    ("trl": what `toolkit bench` runs; "llamafactory"; "unsloth") holds it.

    `seq_len`: tokens per sequence (default the recipe's max_length: every sequence full);
    `padded`: whether batches carry padding (real data does; transformers then builds a mask and
    repeats k and v for grouped-query attention)."""
    from dataclasses import replace

    shape = recipe.model
    lay = _layout(recipe, device, trainer)
    seq = seq_len or recipe.max_length
    n_seq = recipe.batch_size * (2 if recipe.stage == "dpo" else 1)
    parts = _parameter_parts(recipe, shape, lay, trainer)
    config = recipe.model_config or {}
    act_shape = shape
    if model_config.n_experts(config):  # a token's activations pass its routed (+ shared) experts only
        act_shape = replace(shape, intermediate_size=model_config.active_intermediate(config))
    per_layer, layer_words = _per_token_layer(recipe, act_shape, lay, seq, padded)
    parts.append(_activations(recipe, act_shape, lay, per_layer, layer_words, n_seq, seq, trainer))
    parts.append(_transients(recipe, act_shape, lay, per_layer, n_seq, seq, padded, trainer))

    notes = [f"layout: {lay.what}"]
    if recipe.quantized and device == "cpu":
        notes.append("quantized base on bitsandbytes' CPU backend: weights dequantized per layer")
    if "paged" in recipe.optim and device != "cpu":
        notes.append("paged optimizer states live in unified memory, outside torch's allocator")
    return Estimate(
        parts=tuple(parts),
        device=device,
        notes=tuple(notes),
        inputs={
            "stage": recipe.stage,
            "trainer": trainer,
            "sequences": n_seq,
            "tokens_per_sequence": seq,
            "activation_checkpointing": recipe.activation_checkpointing,
            "padded": padded,
        },
    )


def estimate_inference(shape: ModelShape, batch: int, tokens: int, dtype: str = "bfloat16") -> Estimate:
    """Weights plus the KV cache of `batch` sequences of `tokens` (prompt + generated), plus one step's
    logits (batch x vocabulary in fp32: generation upcasts the last position's logits)."""
    b = {"float32": 4, "fp32": 4, "bfloat16": 2, "bf16": 2, "float16": 2, "fp16": 2}.get(dtype, 2)
    n = flops.total_params(shape)
    kv = flops.kv_cache_bytes(shape, tokens, batch, b)
    per_token = 2 * shape.num_hidden_layers * shape.num_key_value_heads * shape.head_dim
    prefill = batch * tokens * (shape.intermediate_size * 3 + shape.hidden_size * 4) * b
    parts = (
        Part("weights", n * b, f"{n / 1e9:.3f} B parameters x {b} B"),
        Part(
            "KV cache",
            kv,
            f"2 (K, V) x {shape.num_hidden_layers} layers x {shape.num_key_value_heads} kv heads x "
            f"{shape.head_dim} x {tokens} tokens x batch {batch} x {b} B ({per_token * b} B/token)",
        ),
        Part(
            "peak transient",
            prefill + batch * shape.vocab_size * 4,
            "prefill: one layer's MLP (3 x intermediate + 4 x hidden per token) "
            "+ last-position logits in fp32",
        ),
    )
    return Estimate(parts=parts, device="gpu", inputs={"batch": batch, "tokens": tokens, "dtype": dtype})
