// GGUF tokenizer metadata (`tokenizer.ggml.*`) as llama.cpp reads it (src/llama-vocab.cpp) and
// convert_hf_to_gguf.py writes it: model ("gpt2" byte-level BPE or "llama" SentencePiece), pre-tokenizer,
// tokens, token types, merges or scores, special ids.
import { createHash } from "node:crypto";
import { UserError } from "../../errors.ts";
import type { Tokenizer } from "../../data/tokenizer.ts";
import { CHECK_TEXT, PRE_TOKENIZER_HASHES } from "./pre_tokenizers.ts";
import { type GgufValue, arr, bool, str, u32 } from "./writer.ts";


/** llama.cpp's token types (tokenizer.ggml.token_type). */
export const GGUF_TOKEN_TYPE = { NORMAL: 1, UNKNOWN: 2, CONTROL: 3, USER_DEFINED: 4, UNUSED: 5, BYTE: 6 } as const;

export interface GgufTokenizer {
  /** "gpt2" (byte-level BPE) or "llama" (SentencePiece). */
  model: "gpt2" | "llama";
  /** tokenizer.ggml.pre: llama.cpp's pre-tokenizer name ("default" when absent). */
  pre?: string;
  tokens: readonly string[];
  tokenTypes: readonly number[];
  /** SentencePiece scores (llama model). */
  scores?: readonly number[];
  /** BPE merges as "left right" (gpt2 model; llama.cpp requires the key, even empty). */
  merges?: readonly string[];
  bosTokenId?: number | null;
  eosTokenId?: number | null;
  padTokenId?: number | null;
  unknownTokenId?: number | null;
  addBosToken?: boolean;
  addEosToken?: boolean;
  /** tokenizer.ggml.add_space_prefix (llama model): whether llama.cpp prepends a space to each text run. */
  addSpacePrefix?: boolean;
  chatTemplate?: string | null;
}

/** GPT-2's byte → printable character table (bytes_to_unicode), which byte-level BPE vocabularies use. */
function byteLevelCharacter(byte: number): string {
  const printable = (b: number) => (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
  if (printable(byte)) return String.fromCharCode(byte);
  let shifted = 0;
  for (let b = 0; b < byte; b++) if (!printable(b)) shifted++;
  return String.fromCharCode(256 + shifted);
}

/**
 * A byte-level BPE vocabulary of `vocabSize` tokens without merges, for random test models whose
 * prompts are token ids: one token per byte value, control tokens at the special ids, and
 * user-defined filler tokens past 256.
 */
export function syntheticTokenizer(
  vocabSize: number,
  special: { bosTokenId?: number | null; eosTokenId?: number | null; padTokenId?: number | null } = {},
): GgufTokenizer {
  const tokens: string[] = [];
  const tokenTypes: number[] = [];
  const names = new Map<number, string>();
  if (special.bosTokenId != null) names.set(special.bosTokenId, "<|bos|>");
  if (special.eosTokenId != null) names.set(special.eosTokenId, "<|eos|>");
  if (special.padTokenId != null && !names.has(special.padTokenId)) names.set(special.padTokenId, "<|pad|>");
  for (let id = 0; id < vocabSize; id++) {
    const name = names.get(id);
    if (name) {
      tokens.push(name);
      tokenTypes.push(GGUF_TOKEN_TYPE.CONTROL);
    } else if (id < 256) {
      tokens.push(byteLevelCharacter(id));
      tokenTypes.push(GGUF_TOKEN_TYPE.NORMAL);
    } else {
      tokens.push(`<|extra_${id}|>`);
      tokenTypes.push(GGUF_TOKEN_TYPE.USER_DEFINED);
    }
  }
  return { model: "gpt2", tokens, tokenTypes, merges: [], ...special };
}

export function tokenizerMetadata(tokenizer: GgufTokenizer): [string, GgufValue][] {
  if (tokenizer.tokenTypes.length !== tokenizer.tokens.length) {
    throw new UserError(`tokenizer has ${tokenizer.tokens.length} tokens but ${tokenizer.tokenTypes.length} token types`, "GGUF export");
  }
  const entries: [string, GgufValue][] = [
    ["tokenizer.ggml.model", str(tokenizer.model)],
    ["tokenizer.ggml.pre", str(tokenizer.pre ?? "default")],
    ["tokenizer.ggml.tokens", arr("string", tokenizer.tokens)],
    ["tokenizer.ggml.token_type", arr("int32", tokenizer.tokenTypes)],
  ];
  if (tokenizer.scores) entries.push(["tokenizer.ggml.scores", arr("float32", tokenizer.scores)]);
  if (tokenizer.model === "gpt2") entries.push(["tokenizer.ggml.merges", arr("string", tokenizer.merges ?? [])]);
  const ids: [string, number | null | undefined][] = [
    ["tokenizer.ggml.bos_token_id", tokenizer.bosTokenId],
    ["tokenizer.ggml.eos_token_id", tokenizer.eosTokenId],
    ["tokenizer.ggml.unknown_token_id", tokenizer.unknownTokenId],
    ["tokenizer.ggml.padding_token_id", tokenizer.padTokenId],
  ];
  for (const [key, id] of ids) if (id != null) entries.push([key, u32(id)]);
  if (tokenizer.addBosToken !== undefined) entries.push(["tokenizer.ggml.add_bos_token", bool(tokenizer.addBosToken)]);
  if (tokenizer.addEosToken !== undefined) entries.push(["tokenizer.ggml.add_eos_token", bool(tokenizer.addEosToken)]);
  if (tokenizer.addSpacePrefix !== undefined) entries.push(["tokenizer.ggml.add_space_prefix", bool(tokenizer.addSpacePrefix)]);
  if (tokenizer.chatTemplate) entries.push(["tokenizer.chat_template", str(tokenizer.chatTemplate)]);
  return entries;
}


// --- from a Hugging Face tokenizer --------------------------------------------------------------

/** Pre-tokenizer regexes (tokenizer.json `Split` patterns) of llama.cpp pre-tokenizers, for tokenizers its hash table lacks. */
const PRE_TOKENIZER_REGEXES: Readonly<Record<string, string>> = {
  "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+": "llama-bpe",
  "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+": "qwen2",
};

type Json = Record<string, unknown>;
type BpeModelJson = { type?: string; vocab?: Record<string, number>; merges?: unknown[]; byte_fallback?: boolean; unk_token?: string | null };

/**
 * get_vocab_base_pre: llama.cpp's name for the tokenizer's pre-tokenizer, by the hash of the check
 * text's ids; else by its Split regex; a plain byte-level pre-tokenizer with GPT-2's regex is
 * llama.cpp's "gpt-2". Null when llama.cpp has no matching pre-tokenizer.
 */
export function preTokenizerName(tokenizer: Tokenizer): string | null {
  const ids = tokenizer.encode(CHECK_TEXT);
  const hash = createHash("sha256").update(`[${ids.join(", ")}]`).digest("hex");
  const known = PRE_TOKENIZER_HASHES[hash];
  if (known) return known;
  const pre = tokenizer.toTokenizerJson().pre_tokenizer as Json | null | undefined;
  const steps = pre?.type === "Sequence" ? (pre.pretokenizers as Json[]) : pre ? [pre] : [];
  const split = steps.find((step) => step.type === "Split");
  const regex = (split?.pattern as { Regex?: string } | undefined)?.Regex;
  if (regex && PRE_TOKENIZER_REGEXES[regex] && steps.some((step) => step.type === "ByteLevel" && step.use_regex === false)) return PRE_TOKENIZER_REGEXES[regex]!;
  if (steps.length === 1 && steps[0]!.type === "ByteLevel" && steps[0]!.use_regex !== false && steps[0]!.add_prefix_space !== true) return "gpt-2";
  return null;
}

/** does_token_look_special: added tokens that convert_hf_to_gguf.py marks as control even when not flagged special. */
function looksSpecial(token: string): boolean {
  return (
    ["<pad>", "<mask>", "<2mass>", "[@BOS@]"].includes(token) ||
    (token.startsWith("<|") && token.endsWith("|>")) ||
    (token.startsWith("<｜") && token.endsWith("｜>")) ||
    (token.startsWith("<unused") && token.endsWith(">"))
  );
}

/**
 * Every token by id: the model's vocabulary with the added tokens over it, and the added tokens'
 * entries; a token id beyond the model's `vocabSize` embedding rows is refused.
 */
function tokensById(tokenizer: Tokenizer, vocab: Record<string, number>, vocabSize: number) {
  const byId = new Map<number, string>();
  for (const [token, id] of Object.entries(vocab)) byId.set(id, token);
  const added = new Map(tokenizer.addedTokenEntries.map((entry) => [entry.id, entry]));
  for (const [id, entry] of added) byId.set(id, entry.content);
  let maxId = -1;
  for (const id of byId.keys()) maxId = Math.max(maxId, id);
  if (maxId >= vocabSize) {
    throw new UserError(`the tokenizer has token id ${maxId} but the model's vocab_size is ${vocabSize}`, "GGUF export", "set resize_vocab: true so the embeddings cover the tokenizer");
  }
  return { byId, added };
}

/**
 * The tokenizer metadata convert_hf_to_gguf.py writes for a byte-level BPE tokenizer.json
 * (`_set_vocab_gpt2`: get_vocab_base and SpecialVocab): tokens padded to the model's vocab_size
 * with `[PADn]`, control/user-defined types for added tokens, merges, special ids, add_bos and the
 * chat template. SentencePiece-style tokenizers (byte-fallback BPE: Llama 2, Mistral, Gemma, Phi-3)
 * become llama.cpp's "llama" vocabulary (sentencePieceTokenizer below).
 */
export function ggufTokenizerFromHf(tokenizer: Tokenizer, vocabSize: number, chatTemplate: string | null): GgufTokenizer {
  const json = tokenizer.toTokenizerJson();
  const model = json.model as BpeModelJson;
  const pre = json.pre_tokenizer as Json | null | undefined;
  const byteLevel = JSON.stringify(pre ?? {}).includes('"ByteLevel"');
  if (model.type === "BPE" && model.byte_fallback && !byteLevel) return sentencePieceTokenizer(tokenizer, json, vocabSize, chatTemplate);
  if (model.type !== "BPE" || model.byte_fallback || !byteLevel) {
    throw new UserError(
      `GGUF export writes byte-level BPE tokenizers (Llama 3, Qwen, GPT-2 style) and SentencePiece-style BPE with byte fallback (Llama 2, Mistral, Gemma, Phi-3); this tokenizer.json is ${model.type ?? "unknown"}${model.byte_fallback ? " with byte fallback and a byte-level pre-tokenizer" : ""}`,
      "export_format: gguf",
      "export a Hugging Face folder (export_format: hf) and convert it with llama.cpp's convert_hf_to_gguf.py",
    );
  }
  const preName = preTokenizerName(tokenizer);
  if (!preName) {
    throw new UserError(
      "llama.cpp has no pre-tokenizer matching this tokenizer (its check-text hash and split regex are unknown to llama.cpp)",
      "export_format: gguf",
      "export a Hugging Face folder and add the tokenizer to llama.cpp's convert_hf_to_gguf_update.py",
    );
  }
  const { byId, added } = tokensById(tokenizer, model.vocab ?? {}, vocabSize);
  const tokens: string[] = [];
  const tokenTypes: number[] = [];
  for (let id = 0; id < vocabSize; id++) {
    let token = byId.get(id);
    const entry = added.get(id);
    if (token === undefined) {
      tokens.push(`[PAD${id}]`);
      tokenTypes.push(GGUF_TOKEN_TYPE.UNUSED);
      continue;
    }
    if (entry) {
      // llama.cpp expects control and user-defined tokens pre-normalized.
      if (!entry.normalized) token = tokenizer.decode(tokenizer.encode(token, { addSpecialTokens: false }));
      if (entry.special || looksSpecial(token)) {
        tokenTypes.push(GGUF_TOKEN_TYPE.CONTROL);
      } else {
        token = token.replaceAll("\u2581", " ");
        tokenTypes.push(GGUF_TOKEN_TYPE.USER_DEFINED);
      }
    } else {
      tokenTypes.push(GGUF_TOKEN_TYPE.NORMAL);
    }
    tokens.push(token);
  }
  // Merges as "left right"; the pair form (transformers >= 4.45) encodes spaces as U+0120.
  const merges = (model.merges ?? []).map((merge) =>
    typeof merge === "string" ? merge : (merge as string[]).map((part) => part.replaceAll(" ", "\u0120")).join(" "),
  );
  const addEos = tokenizer.config.add_eos_token;
  return {
    model: "gpt2",
    pre: preName,
    tokens,
    tokenTypes,
    merges,
    bosTokenId: tokenizer.bosTokenId,
    eosTokenId: tokenizer.eosTokenId,
    unknownTokenId: tokenizer.unkTokenId,
    padTokenId: tokenizer.padTokenId,
    addBosToken: tokenizer.addBosToken,
    addEosToken: typeof addEos === "boolean" ? addEos : undefined,
    chatTemplate,
  };
}


// --- SentencePiece-style (byte-fallback BPE) tokenizer.json → llama.cpp's "llama" vocabulary ----

const WORD_BOUNDARY = "\u2581";

/**
 * Whether the tokenizer prepends "▁" to each text run (llama.cpp's add_space_prefix), from the
 * shapes transformers writes for SentencePiece models: normalizer Replace(" " → "▁"), after a
 * Prepend("▁") when the model adds a dummy prefix (legacy Llama 2, Mistral v0.1, Phi-3; Gemma has
 * none), or no normalizer and a Metaspace pre-tokenizer that does not split. Null for anything
 * else (NFKC, splitting Metaspace, ...), which llama.cpp's SPM tokenizer would not reproduce.
 */
function spacePrefix(json: Json): boolean | null {
  const normalizer = json.normalizer as Json | null | undefined;
  const pre = json.pre_tokenizer as Json | null | undefined;
  const isReplace = (step: Json) => step.type === "Replace" && (step.pattern as Json | undefined)?.String === " " && step.content === WORD_BOUNDARY;
  if (normalizer && !pre) {
    const steps = normalizer.type === "Sequence" ? (normalizer.normalizers as Json[]) : [normalizer];
    if (steps.length === 1 && isReplace(steps[0]!)) return false;
    if (steps.length === 2 && steps[0]!.type === "Prepend" && steps[0]!.prepend === WORD_BOUNDARY && isReplace(steps[1]!)) return true;
    return null;
  }
  if (!normalizer && pre?.type === "Metaspace" && pre.replacement === WORD_BOUNDARY && pre.split !== true) {
    // Metaspace prefixes no "▁" to a run that already starts with a space, and with prepend_scheme
    // "first" (transformers' legacy: false) none to the text after a special token; llama.cpp's SPM
    // (as with files converted from tokenizer.model) prefixes every run: ids differ there only.
    if (typeof pre.prepend_scheme === "string") return pre.prepend_scheme !== "never";
    return pre.add_prefix_space !== false;
  }
  return null;
}

/**
 * The "llama" (SentencePiece) vocabulary for a byte-fallback BPE tokenizer.json, as
 * convert_hf_to_gguf.py's `_set_vocab_llama_hf` (gguf-py LlamaHfVocab, SpecialVocab) writes it:
 * tokens by id, `<0xXX>` pieces as byte tokens, the unknown token, added tokens as control
 * (special) or user-defined (with "▁" pre-normalized to a space), `[PADn]` up to vocab_size.
 *
 * Scores: a tokenizer.json carries none, and LlamaHfVocab writes -1000 for every token, with which
 * llama.cpp's SPM tokenizer (llm_tokenizer_spm in src/llama-vocab.cpp: repeatedly merge the adjacent
 * pair whose concatenation is the vocabulary token of highest score, leftmost on ties) merges
 * left to right and gives other ids than Hugging Face. Hugging Face's BPE merges the pair of lowest
 * merge rank, leftmost on ties; so each token's score here is minus the rank of the first merge
 * that makes it, and llama.cpp then merges in Hugging Face's order. Single characters, bytes and
 * specials score 0 (llama.cpp never consults them); longer pieces no merge makes score below all.
 */
function sentencePieceTokenizer(tokenizer: Tokenizer, json: Json, vocabSize: number, chatTemplate: string | null): GgufTokenizer {
  const model = json.model as BpeModelJson;
  const addSpacePrefix = spacePrefix(json);
  if (addSpacePrefix === null) {
    throw new UserError(
      `llama.cpp's SentencePiece tokenizer cannot reproduce this tokenizer.json's normalizer/pre-tokenizer (${JSON.stringify(json.normalizer ?? null).slice(0, 120)}, ${JSON.stringify(json.pre_tokenizer ?? null).slice(0, 120)}); it reproduces Replace(" " → "▁") with an optional Prepend("▁"), or a non-splitting Metaspace`,
      "export_format: gguf",
      "export a Hugging Face folder (export_format: hf) and convert it with llama.cpp's convert_hf_to_gguf.py from the model's tokenizer.model",
    );
  }
  const vocab = model.vocab ?? {};
  const { byId, added } = tokensById(tokenizer, vocab, vocabSize);
  // Minus the rank of the first merge that makes each token.
  const mergeScore = new Map<number, number>();
  (model.merges ?? []).forEach((merge, rank) => {
    const [left, right] = typeof merge === "string" ? merge.split(" ") : (merge as string[]);
    const id = vocab[`${left}${right}`];
    if (id !== undefined && !mergeScore.has(id)) mergeScore.set(id, -rank);
  });
  const unmerged = -(model.merges ?? []).length - 1;
  const unknownTokenId = tokenizer.unkTokenId ?? (model.unk_token != null ? (vocab[model.unk_token] ?? null) : null);
  const tokens: string[] = [];
  const tokenTypes: number[] = [];
  const scores: number[] = [];
  for (let id = 0; id < vocabSize; id++) {
    let token = byId.get(id);
    const entry = added.get(id);
    if (token === undefined) {
      tokens.push(`[PAD${id}]`);
      tokenTypes.push(GGUF_TOKEN_TYPE.UNUSED);
      scores.push(-1000);
      continue;
    }
    if (entry) {
      if (entry.special || looksSpecial(token)) {
        tokenTypes.push(id === unknownTokenId ? GGUF_TOKEN_TYPE.UNKNOWN : GGUF_TOKEN_TYPE.CONTROL);
      } else {
        token = token.replaceAll(WORD_BOUNDARY, " ");
        tokenTypes.push(GGUF_TOKEN_TYPE.USER_DEFINED);
      }
    } else if (id === unknownTokenId) {
      tokenTypes.push(GGUF_TOKEN_TYPE.UNKNOWN);
    } else if (/^<0x[0-9A-Fa-f]{2}>$/.test(token)) {
      tokenTypes.push(GGUF_TOKEN_TYPE.BYTE);
    } else {
      tokenTypes.push(GGUF_TOKEN_TYPE.NORMAL);
    }
    tokens.push(token);
    // A multi-character piece no merge makes (Gemma's <table>, </s>, ...) scores below every merge:
    // llama.cpp merges any adjacent pair whose text is a token, Hugging Face only listed merges.
    const merged = mergeScore.get(id);
    scores.push(merged ?? (tokenTypes.at(-1) === GGUF_TOKEN_TYPE.NORMAL && [...token].length > 1 ? unmerged : 0));
  }
  const addEos = tokenizer.config.add_eos_token;
  return {
    model: "llama",
    pre: "default",
    tokens,
    tokenTypes,
    scores,
    bosTokenId: tokenizer.bosTokenId,
    eosTokenId: tokenizer.eosTokenId,
    unknownTokenId,
    padTokenId: tokenizer.padTokenId,
    addBosToken: tokenizer.addBosToken,
    addEosToken: typeof addEos === "boolean" ? addEos : undefined,
    addSpacePrefix,
    chatTemplate,
  };
}
