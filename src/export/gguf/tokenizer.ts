// GGUF tokenizer metadata (`tokenizer.ggml.*`) as llama.cpp reads it (src/llama-vocab.cpp) and
// convert_hf_to_gguf.py writes it: model, pre-tokenizer, tokens, token types, merges, special ids.
import { UserError } from "../../errors.ts";
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
  if (tokenizer.chatTemplate) entries.push(["tokenizer.chat_template", str(tokenizer.chatTemplate)]);
  return entries;
}

