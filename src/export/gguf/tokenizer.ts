// GGUF tokenizer metadata (`tokenizer.ggml.*`) as llama.cpp reads it (src/llama-vocab.cpp) and
// convert_hf_to_gguf.py writes it: model, pre-tokenizer, tokens, token types, merges, special ids.
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
 * The tokenizer metadata convert_hf_to_gguf.py writes for a byte-level BPE tokenizer.json
 * (`_set_vocab_gpt2`: get_vocab_base and SpecialVocab): tokens padded to the model's vocab_size
 * with `[PADn]`, control/user-defined types for added tokens, merges, special ids, add_bos and the
 * chat template. SentencePiece-style tokenizers (Llama 2, Mistral) are refused.
 */
export function ggufTokenizerFromHf(tokenizer: Tokenizer, vocabSize: number, chatTemplate: string | null): GgufTokenizer {
  const json = tokenizer.toTokenizerJson();
  const model = json.model as { type?: string; vocab?: Record<string, number>; merges?: unknown[]; byte_fallback?: boolean };
  const pre = json.pre_tokenizer as Json | null | undefined;
  const byteLevel = JSON.stringify(pre ?? {}).includes('"ByteLevel"');
  if (model.type !== "BPE" || model.byte_fallback || !byteLevel) {
    throw new UserError(
      `GGUF export writes byte-level BPE tokenizers (Llama 3, Qwen, GPT-2 style); this tokenizer.json is ${model.type ?? "unknown"}${model.byte_fallback ? " with byte fallback (SentencePiece-style, as Llama 2 and Mistral)" : ""}`,
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
  const byId = new Map<number, string>();
  for (const [token, id] of Object.entries(model.vocab ?? {})) byId.set(id, token);
  const added = new Map(tokenizer.addedTokenEntries.map((entry) => [entry.id, entry]));
  for (const [id, entry] of added) byId.set(id, entry.content);
  let maxId = -1;
  for (const id of byId.keys()) maxId = Math.max(maxId, id);
  if (maxId >= vocabSize) {
    throw new UserError(`the tokenizer has token id ${maxId} but the model's vocab_size is ${vocabSize}`, "GGUF export", "set resize_vocab: true so the embeddings cover the tokenizer");
  }
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
