// The tokenizer of a local Hugging Face folder: tokenizer.json (the fast tokenizer, run by the
// pure-JS `@huggingface/tokenizers`) + tokenizer_config.json, special_tokens_map.json,
// chat_template.jinja/json and generation_config.json, with transformers' `PreTrainedTokenizerFast`
// semantics for special tokens, `add_special_tokens`, `split_special_tokens` and added tokens.
import { copyFileSync, existsSync, readFileSync, readdirSync } from "node:fs";
import { join } from "node:path";
import { Tokenizer as JsTokenizer } from "@huggingface/tokenizers";
import { UserError } from "../errors.ts";

type Json = Record<string, unknown>;

interface AddedTokenJson {
  id: number;
  content: string;
  single_word: boolean;
  lstrip: boolean;
  rstrip: boolean;
  normalized: boolean;
  special: boolean;
}

/** The special-token roles transformers keeps as attributes. */
const SPECIAL_ROLES = ["bos_token", "eos_token", "unk_token", "pad_token"] as const;
type SpecialRole = (typeof SPECIAL_ROLES)[number];

export interface SpecialTokensUpdate {
  bos_token?: string;
  eos_token?: string;
  unk_token?: string;
  pad_token?: string;
  additional_special_tokens?: string[];
}

export interface LoadTokenizerOptions {
  /** Treat special tokens written in text as plain text (transformers' `split_special_tokens`). */
  splitSpecialTokens?: boolean;
  /** Ordinary tokens to add (ModelArguments `add_tokens`). */
  addTokens?: string[];
  /** Special tokens to add (ModelArguments `add_special_tokens`). */
  addSpecialTokens?: string[];
}

function readJson(path: string): Json | null {
  if (!existsSync(path)) return null;
  try {
    return JSON.parse(readFileSync(path, "utf8")) as Json;
  } catch (error) {
    throw new UserError(`cannot parse JSON: ${(error as Error).message}`, path, "fix or re-download the file");
  }
}

const TOKENIZER_FIX = "re-download the model's tokenizer.json, or save it again: AutoTokenizer.from_pretrained(path).save_pretrained(path) in Python";

/**
 * tokenizer.json checked as HF tokenizers' deserializer reads it (tokenizer/serialization.rs): an
 * object with a `model` holding a vocabulary, version "1.0" when given; the normalizer,
 * pre-tokenizer, post-processor and decoder may be absent, which means none (null).
 */
function checkTokenizerJson(json: unknown, path: string): Json {
  if (json === null || typeof json !== "object" || Array.isArray(json)) throw new UserError("not a tokenizer: the file holds no JSON object", path, TOKENIZER_FIX);
  const tokenizer = json as Json;
  if (tokenizer.version !== undefined && tokenizer.version !== "1.0") {
    throw new UserError(`unknown tokenizer version ${JSON.stringify(tokenizer.version)} (tokenizers reads version "1.0")`, path, TOKENIZER_FIX);
  }
  const model = tokenizer.model as Json | undefined;
  if (model === null || typeof model !== "object" || Array.isArray(model)) {
    throw new UserError("not a tokenizer: it has no `model` (the BPE, Unigram or WordPiece model with its vocabulary)", path, TOKENIZER_FIX);
  }
  if (model.vocab === null || typeof model.vocab !== "object") {
    throw new UserError(`the tokenizer's model${typeof model.type === "string" ? ` (${model.type})` : ""} has no \`vocab\``, path, TOKENIZER_FIX);
  }
  if (tokenizer.added_tokens !== undefined && !Array.isArray(tokenizer.added_tokens)) throw new UserError("`added_tokens` is not a list", path, TOKENIZER_FIX);
  return { normalizer: null, pre_tokenizer: null, post_processor: null, decoder: null, added_tokens: [], ...tokenizer };
}

/** A token entry in tokenizer_config.json / special_tokens_map.json: a string or an AddedToken dict. */
function tokenContent(value: unknown): string | null {
  if (typeof value === "string") return value;
  if (value && typeof value === "object" && typeof (value as Json).content === "string") {
    return (value as Json).content as string;
  }
  return null;
}

/** tokenizer_config's `chat_template` may be one string or a list of named templates. */
function pickChatTemplate(value: unknown): string | null {
  if (typeof value === "string") return value;
  if (Array.isArray(value)) {
    const named = value as Array<{ name?: string; template?: string }>;
    return (named.find((entry) => entry.name === "default") ?? named[0])?.template ?? null;
  }
  return null;
}

export class Tokenizer {
  /** tokenizer_config.json merged with special_tokens_map.json (which wins, as in transformers). */
  readonly config: Json;
  readonly generationConfig: Json | null;
  readonly splitSpecialTokens: boolean;
  chatTemplate: string | null;
  bosToken: string | null = null;
  eosToken: string | null = null;
  unkToken: string | null = null;
  padToken: string | null = null;
  additionalSpecialTokens: string[];
  paddingSide: "left" | "right";

  private readonly tokenizerJson: Json;
  private addedTokens: AddedTokenJson[];
  private inner: JsTokenizer | null = null;
  private innerSplitting: JsTokenizer | null = null;
  private bosAddedByPostProcessor: boolean | null = null;
  private baseVocabMap: Map<string, number> | null = null;

  constructor(tokenizerJson: Json, config: Json, options: { generationConfig?: Json | null; chatTemplate?: string | null; splitSpecialTokens?: boolean } = {}) {
    this.tokenizerJson = tokenizerJson;
    this.config = config;
    this.generationConfig = options.generationConfig ?? null;
    this.splitSpecialTokens = options.splitSpecialTokens ?? config.split_special_tokens === true;
    this.chatTemplate = options.chatTemplate ?? pickChatTemplate(config.chat_template);
    this.addedTokens = ((tokenizerJson.added_tokens ?? []) as AddedTokenJson[]).map((token) => ({ ...token }));
    for (const role of SPECIAL_ROLES) this.setRole(role, tokenContent(config[role]));
    const additional = Array.isArray(config.additional_special_tokens) ? config.additional_special_tokens : [];
    this.additionalSpecialTokens = additional.map(tokenContent).filter((token): token is string => token !== null);
    this.paddingSide = config.padding_side === "left" ? "left" : "right";
  }

  /** Loads the tokenizer files of an HF folder. */
  static fromFolder(dir: string, options: LoadTokenizerOptions = {}): Tokenizer {
    const tokenizerPath = join(dir, "tokenizer.json");
    const rawTokenizerJson = readJson(tokenizerPath);
    if (!rawTokenizerJson) {
      throw new UserError(
        "no tokenizer.json (only fast tokenizers are supported)",
        dir,
        "save a fast tokenizer there: AutoTokenizer.from_pretrained(path).save_pretrained(path) in Python",
      );
    }
    const tokenizerJson = checkTokenizerJson(rawTokenizerJson, tokenizerPath);
    const config: Json = { ...(readJson(join(dir, "tokenizer_config.json")) ?? {}) };
    const specialMap = readJson(join(dir, "special_tokens_map.json")) ?? {};
    for (const [key, value] of Object.entries(specialMap)) config[key] = value;
    let chatTemplate = pickChatTemplate(config.chat_template);
    if (existsSync(join(dir, "chat_template.jinja"))) {
      chatTemplate = readFileSync(join(dir, "chat_template.jinja"), "utf8");
    } else if (chatTemplate === null) {
      chatTemplate = pickChatTemplate(readJson(join(dir, "chat_template.json"))?.chat_template);
    }
    const tokenizer = new Tokenizer(tokenizerJson, config, {
      generationConfig: readJson(join(dir, "generation_config.json")),
      chatTemplate,
      splitSpecialTokens: options.splitSpecialTokens,
    });
    tokenizer.checkUsable(tokenizerPath);
    if (options.addTokens?.length) tokenizer.addTokens(options.addTokens);
    if (options.addSpecialTokens?.length) tokenizer.addSpecialTokens({ additional_special_tokens: options.addSpecialTokens });
    return tokenizer;
  }

  /** Builds the tokenizer now and runs it once, so a file the library cannot use fails at load with its name, not mid-preprocessing. */
  checkUsable(path: string): void {
    try {
      const ids = this.encode("Hello, world.", { addSpecialTokens: true });
      if (ids.length > 0) this.tokenizer().decode(ids, { skip_special_tokens: false });
    } catch (error) {
      throw new UserError(`the tokenizer cannot be used: ${(error as Error).message}`, path, TOKENIZER_FIX);
    }
  }

  /** A copy whose later added tokens do not touch this one. */
  clone(): Tokenizer {
    const copy = new Tokenizer({ ...this.tokenizerJson, added_tokens: this.addedTokens }, { ...this.config }, {
      generationConfig: this.generationConfig,
      chatTemplate: this.chatTemplate,
      splitSpecialTokens: this.splitSpecialTokens,
    });
    for (const role of SPECIAL_ROLES) copy.setRole(role, this.getRole(role));
    copy.additionalSpecialTokens = [...this.additionalSpecialTokens];
    copy.paddingSide = this.paddingSide;
    copy.baseVocabMap = this.baseVocabMap;
    return copy;
  }

  get bosTokenId(): number | null {
    return this.idOf(this.bosToken);
  }
  get eosTokenId(): number | null {
    return this.idOf(this.eosToken);
  }
  get unkTokenId(): number | null {
    return this.idOf(this.unkToken);
  }
  get padTokenId(): number | null {
    return this.idOf(this.padToken);
  }

  /** Whether a BOS starts every encoding with special tokens (config `add_bos_token`, else what tokenizer.json's post-processor does). */
  get addBosToken(): boolean {
    if (typeof this.config.add_bos_token === "boolean") return this.config.add_bos_token;
    if (this.bosAddedByPostProcessor === null) {
      const ids = this.encode("", { addSpecialTokens: true });
      this.bosAddedByPostProcessor = this.bosTokenId !== null && ids[0] === this.bosTokenId;
    }
    return this.bosAddedByPostProcessor;
  }

  /** Base vocabulary size without added tokens (transformers' `vocab_size`). */
  get vocabSize(): number {
    const model = this.tokenizerJson.model as { vocab?: Record<string, number> | unknown[] };
    if (Array.isArray(model.vocab)) return model.vocab.length;
    return Object.keys(model.vocab ?? {}).length;
  }

  /** Vocabulary size with added tokens (transformers' `len(tokenizer)`): what embeddings must cover. */
  get length(): number {
    let maxId = this.vocabSize - 1;
    for (const token of this.addedTokens) maxId = Math.max(maxId, token.id);
    return maxId + 1;
  }

  /** Every special token's id: the role tokens, the additional ones and added tokens marked special. */
  get allSpecialIds(): number[] {
    const ids = new Set<number>();
    for (const token of this.addedTokens) if (token.special) ids.add(token.id);
    for (const token of [...SPECIAL_ROLES.map((role) => this.getRole(role)), ...this.additionalSpecialTokens]) {
      const id = this.idOf(token);
      if (id !== null) ids.add(id);
    }
    return [...ids].sort((a, b) => a - b);
  }

  encode(text: string, options: { addSpecialTokens?: boolean } = {}): number[] {
    const tokenizer = this.splitSpecialTokens ? this.splittingTokenizer() : this.tokenizer();
    return tokenizer.encode(text, { add_special_tokens: options.addSpecialTokens ?? true }).ids;
  }

  tokenize(text: string, options: { addSpecialTokens?: boolean } = {}): string[] {
    const tokenizer = this.splitSpecialTokens ? this.splittingTokenizer() : this.tokenizer();
    return tokenizer.encode(text, { add_special_tokens: options.addSpecialTokens ?? false }).tokens;
  }

  decode(ids: readonly number[], options: { skipSpecialTokens?: boolean } = {}): string {
    if (ids.length === 0) return "";
    const skip = options.skipSpecialTokens ?? false;
    const special = new Set(skip ? this.allSpecialIds : []);
    const kept = ids.filter((id) => !special.has(id));
    if (kept.length === 0) return "";
    return this.tokenizer().decode(kept, { skip_special_tokens: false });
  }

  /** The id of a token, or null when the vocabulary lacks it (transformers would give the unk id). */
  convertTokensToIds(token: string): number | null;
  convertTokensToIds(tokens: readonly string[]): Array<number | null>;
  convertTokensToIds(tokens: string | readonly string[]): number | null | Array<number | null> {
    if (typeof tokens === "string") return this.idOf(tokens);
    return tokens.map((token) => this.idOf(token));
  }

  convertIdsToTokens(id: number): string | null;
  convertIdsToTokens(ids: readonly number[]): Array<string | null>;
  convertIdsToTokens(ids: number | readonly number[]): string | null | Array<string | null> {
    if (typeof ids === "number") return this.tokenizer().id_to_token(ids) ?? null;
    return ids.map((id) => this.tokenizer().id_to_token(id) ?? null);
  }

  /** Adds tokens missing from the vocabulary; returns how many were new (then `resize_vocab` is needed). */
  addTokens(tokens: readonly string[], special = false): number {
    let added = 0;
    for (const content of tokens) {
      const existing = this.addedTokens.find((token) => token.content === content);
      if (existing) {
        // transformers re-flags an existing added token as special when asked to.
        if (special && !existing.special) {
          existing.special = true;
          existing.normalized = false;
          this.invalidate();
        }
        continue;
      }
      const inVocab = this.idOf(content);
      this.addedTokens.push({
        id: inVocab ?? this.length,
        content,
        single_word: false,
        lstrip: false,
        rstrip: false,
        normalized: !special,
        special,
      });
      if (inVocab === null) added += 1;
      this.invalidate();
    }
    return added;
  }

  /** transformers' `add_special_tokens`: sets role tokens and extends the additional special tokens. */
  addSpecialTokens(update: SpecialTokensUpdate): number {
    let added = 0;
    for (const role of SPECIAL_ROLES) {
      const token = update[role];
      if (token === undefined) continue;
      added += this.addTokens([token], true);
      this.setRole(role, token);
    }
    for (const token of update.additional_special_tokens ?? []) {
      added += this.addTokens([token], true);
      if (!this.additionalSpecialTokens.includes(token)) this.additionalSpecialTokens.push(token);
    }
    return added;
  }

  private getRole(role: SpecialRole): string | null {
    switch (role) {
      case "bos_token":
        return this.bosToken;
      case "eos_token":
        return this.eosToken;
      case "unk_token":
        return this.unkToken;
      case "pad_token":
        return this.padToken;
    }
  }

  private setRole(role: SpecialRole, token: string | null): void {
    switch (role) {
      case "bos_token":
        this.bosToken = token;
        break;
      case "eos_token":
        this.eosToken = token;
        break;
      case "unk_token":
        this.unkToken = token;
        break;
      case "pad_token":
        this.padToken = token;
        break;
    }
  }

  private idOf(token: string | null): number | null {
    if (token === null) return null;
    const added = this.addedTokens.find((entry) => entry.content === token);
    if (added) return added.id;
    return this.baseVocab().get(token) ?? null;
  }

  /** The model's own vocabulary (without added tokens), read from tokenizer.json without building a tokenizer. */
  private baseVocab(): Map<string, number> {
    if (!this.baseVocabMap) {
      const vocab = (this.tokenizerJson.model as { vocab?: Record<string, number> | Array<[string, number]> }).vocab ?? {};
      this.baseVocabMap = Array.isArray(vocab) ? new Map(vocab.map(([piece], id) => [piece, id])) : new Map(Object.entries(vocab));
    }
    return this.baseVocabMap;
  }

  private invalidate(): void {
    this.inner = null;
    this.innerSplitting = null;
    this.bosAddedByPostProcessor = null;
  }

  private libraryConfig(): Json {
    const { chat_template: _chatTemplate, ...rest } = this.config;
    return {
      ...rest,
      additional_special_tokens: this.additionalSpecialTokens,
      // transformers >= 4.45 no longer cleans up spaces unless the config asks for it.
      clean_up_tokenization_spaces: this.config.clean_up_tokenization_spaces ?? false,
    };
  }

  private tokenizer(): JsTokenizer {
    this.inner ??= new JsTokenizer({ ...this.tokenizerJson, added_tokens: this.addedTokens }, this.libraryConfig());
    return this.inner;
  }

  /** With `split_special_tokens`, special tokens in text are not matched: they are encoded as ordinary text. */
  private splittingTokenizer(): JsTokenizer {
    this.innerSplitting ??= new JsTokenizer(
      { ...this.tokenizerJson, added_tokens: this.addedTokens.filter((token) => !token.special) },
      this.libraryConfig(),
    );
    return this.innerSplitting;
  }
}

/** The files of an HF folder that belong to its tokenizer (and its generation config), saved beside trained weights. */
const TOKENIZER_FILES = /^(tokenizer.*\.json|special_tokens_map\.json|vocab\.json|merges\.txt|.*\.model|added_tokens\.json|chat_template\.(json|jinja)|generation_config\.json)$/;

export function tokenizerFileNames(folder: string): string[] {
  return readdirSync(folder).filter((name) => TOKENIZER_FILES.test(name));
}

export function copyTokenizerFiles(from: string, to: string): void {
  for (const name of tokenizerFileNames(from)) copyFileSync(join(from, name), join(to, name));
}

/** Loads `tokenizer.json` and its companions from a local HF folder. */
export function loadTokenizer(dir: string, options: LoadTokenizerOptions = {}): Tokenizer {
  return Tokenizer.fromFolder(dir, options);
}
