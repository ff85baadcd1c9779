// Makes everything the demo trains on, deterministically, into examples/demo/: a small story
// corpus from a seeded grammar, an identity/instruction set in alpaca format, a byte-level BPE
// tokenizer learned on the corpus (tokenizer.json + tokenizer_config.json with a ChatML template),
// the tiny model's config.json, and dataset_info.json. Run: node --import tsx scripts/make-demo-data.ts
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { seededRandom } from "../src/torch/seeded.ts";

const OUT = process.env.DEMO_DATA_OUT ?? join(import.meta.dirname, "..", "examples", "demo");


// --- the corpus: short stories from a small grammar ---------------------------------------------

const random = seededRandom(2026);
const pick = <T>(items: readonly T[]): T => items[Math.floor(random() * items.length)]!;

const NAMES = ["Mira", "Tomas", "Ada", "Leo", "Nina", "Owen", "Sara", "Ivo", "Lena", "Ravi"];
const ANIMALS = ["fox", "owl", "cat", "dog", "rabbit", "horse", "goat", "crow"];
const PLACES = ["the forest", "the river", "the old mill", "the market", "the hill", "the garden", "the harbor", "the library"];
const OBJECTS = ["a red kite", "a small lamp", "a wooden box", "a blue map", "a silver key", "a basket of apples", "a paper boat", "a warm coat"];
const TIMES = ["In the morning", "At noon", "In the evening", "Late at night", "On a rainy day", "One sunny day"];
const FEELINGS = ["happy", "tired", "curious", "calm", "proud", "surprised"];
const ENDINGS = [
  "and they walked home together.",
  "and the day ended with a quiet song.",
  "and everyone laughed by the fire.",
  "and the sky turned gold over the water.",
];

function story(): string {
  const [a, b] = [pick(NAMES), pick(NAMES)];
  const animal = pick(ANIMALS);
  const place = pick(PLACES);
  const thing = pick(OBJECTS);
  return [
    `${pick(TIMES)}, ${a} went to ${place} with a ${animal}.`,
    `There ${a} found ${thing}.`,
    `${a} showed it to ${b}, who was ${pick(FEELINGS)}.`,
    `The ${animal} looked at ${thing} for a long time.`,
    `Then ${a} and ${b} carried it back from ${place}, ${pick(ENDINGS)}`,
  ].join(" ");
}

const corpus = Array.from({ length: 1200 }, story);

// --- the identity / instruction set -----------------------------------------------------------

const NAME = "Pico";
const IDENTITY_QUESTIONS = [
  "Who are you?",
  "What is your name?",
  "Tell me about yourself.",
  "Introduce yourself.",
  "What are you?",
  "Who made you?",
  "Are you an assistant?",
  "What should I call you?",
];
const IDENTITY_ANSWER = `I am ${NAME}, a tiny assistant trained with lmfactory.`;
const FACTS: [string, string][] = [
  ["What color is the kite?", "The kite is red."],
  ["What does the silver key open?", "The silver key opens the wooden box."],
  ["Where do the stories happen?", "They happen in a small town by the river."],
  ["What is your favorite animal?", "My favorite animal is the fox."],
  ["Say hello.", "Hello! Nice to meet you."],
];
const identity = [
  ...IDENTITY_QUESTIONS.map((instruction) => ({ instruction, input: "", output: IDENTITY_ANSWER })),
  ...FACTS.map(([instruction, output]) => ({ instruction, input: "", output })),
];

// --- a byte-level BPE tokenizer learned on the corpus ---------------------------------------------

/** GPT-2's byte -> printable character table (bytes_to_unicode). */
function bytesToUnicode(): string[] {
  const printable = [
    ...Array.from({ length: 0x7e - 0x21 + 1 }, (_, i) => 0x21 + i),
    ...Array.from({ length: 0xac - 0xa1 + 1 }, (_, i) => 0xa1 + i),
    ...Array.from({ length: 0xff - 0xae + 1 }, (_, i) => 0xae + i),
  ];
  const table: string[] = [];
  let extra = 0;
  for (let b = 0; b < 256; b++) table[b] = String.fromCodePoint(printable.includes(b) ? b : 256 + extra++);
  return table;
}

const BYTE_CHARS = bytesToUnicode();
const PRETOKENIZE = /'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+/gu;

function trainBpe(texts: string[], numMerges: number): { vocab: Record<string, number>; merges: string[] } {
  const wordCounts = new Map<string, number>();
  for (const text of texts) {
    for (const word of text.match(PRETOKENIZE) ?? []) {
      const mapped = [...Buffer.from(word, "utf8")].map((b) => BYTE_CHARS[b]).join("\u0000");
      wordCounts.set(mapped, (wordCounts.get(mapped) ?? 0) + 1);
    }
  }
  let words = [...wordCounts].map(([word, count]) => ({ symbols: word.split("\u0000"), count }));
  const vocab: Record<string, number> = {};
  BYTE_CHARS.forEach((char, id) => (vocab[char] = id));
  const merges: string[] = [];
  for (let m = 0; m < numMerges; m++) {
    const pairs = new Map<string, number>();
    for (const { symbols, count } of words) {
      for (let i = 0; i + 1 < symbols.length; i++) {
        const key = symbols[i] + " " + symbols[i + 1];
        pairs.set(key, (pairs.get(key) ?? 0) + count);
      }
    }
    let best: string | null = null;
    let bestCount = 1;
    for (const [pair, count] of pairs) if (count > bestCount || (count === bestCount && best !== null && pair < best)) [best, bestCount] = [pair, count];
    if (!best) break;
    const [left, right] = best.split(" ") as [string, string];
    const merged = left + right;
    merges.push(best);
    vocab[merged] = Object.keys(vocab).length;
    words = words.map(({ symbols, count }) => {
      const out: string[] = [];
      for (let i = 0; i < symbols.length; i++) {
        if (i + 1 < symbols.length && symbols[i] === left && symbols[i + 1] === right) {
          out.push(merged);
          i++;
        } else {
          out.push(symbols[i]!);
        }
      }
      return { symbols: out, count };
    });
  }
  return { vocab, merges };
}

const identityTexts = identity.map((row) => `${row.instruction} ${row.output}`);
const { vocab, merges } = trainBpe([...corpus, ...identityTexts], 700);
const SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"];
const firstSpecial = Object.keys(vocab).length;
const addedTokens = SPECIALS.map((content, i) => ({
  id: firstSpecial + i,
  content,
  single_word: false,
  lstrip: false,
  rstrip: false,
  normalized: false,
  special: true,
}));
const byteLevel = { type: "ByteLevel", add_prefix_space: false, trim_offsets: true, use_regex: true };
const tokenizerJson = {
  version: "1.0",
  truncation: null,
  padding: null,
  added_tokens: addedTokens,
  normalizer: null,
  pre_tokenizer: byteLevel,
  post_processor: { ...byteLevel, trim_offsets: false },
  decoder: byteLevel,
  model: {
    type: "BPE",
    dropout: null,
    unk_token: null,
    continuing_subword_prefix: null,
    end_of_word_suffix: null,
    fuse_unk: false,
    byte_fallback: false,
    ignore_merges: false,
    vocab,
    merges,
  },
};
const CHATML =
  "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}{% endfor %}" +
  "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";
const tokenizerConfig = {
  added_tokens_decoder: Object.fromEntries(addedTokens.map(({ id, ...rest }) => [String(id), rest])),
  bos_token: null,
  eos_token: "<|im_end|>",
  pad_token: "<|endoftext|>",
  unk_token: null,
  chat_template: CHATML,
  clean_up_tokenization_spaces: false,
  model_max_length: 512,
  tokenizer_class: "PreTrainedTokenizerFast",
};
const vocabSize = firstSpecial + SPECIALS.length;

// --- the tiny model's config ------------------------------------------------------------------

const config = {
  architectures: ["LlamaForCausalLM"],
  model_type: "llama",
  vocab_size: vocabSize,
  hidden_size: 128,
  intermediate_size: 352,
  num_hidden_layers: 4,
  num_attention_heads: 4,
  num_key_value_heads: 2,
  max_position_embeddings: 512,
  rms_norm_eps: 1e-6,
  rope_theta: 10000,
  initializer_range: 0.02,
  tie_word_embeddings: true,
  bos_token_id: null,
  eos_token_id: firstSpecial + 2,
  pad_token_id: firstSpecial,
  torch_dtype: "float32",
};

const datasetInfo = {
  demo_corpus: { file_name: "corpus.jsonl", columns: { prompt: "text" } },
  demo_identity: { file_name: "identity.json" },
};

mkdirSync(OUT, { recursive: true });
const json = (value: unknown) => JSON.stringify(value, null, 2) + "\n";
writeFileSync(join(OUT, "corpus.jsonl"), corpus.map((text) => JSON.stringify({ text })).join("\n") + "\n");
writeFileSync(join(OUT, "identity.json"), json(identity));
writeFileSync(join(OUT, "dataset_info.json"), json(datasetInfo));
const modelDir = join(OUT, "tiny-llama");
mkdirSync(modelDir, { recursive: true });
writeFileSync(join(modelDir, "tokenizer.json"), JSON.stringify(tokenizerJson) + "\n");
writeFileSync(join(modelDir, "tokenizer_config.json"), json(tokenizerConfig));
writeFileSync(join(modelDir, "config.json"), json(config));
writeFileSync(join(modelDir, "generation_config.json"), json({ eos_token_id: [config.eos_token_id], pad_token_id: config.pad_token_id }));
console.log(`demo data: ${corpus.length} stories, ${identity.length} instructions, vocabulary ${vocabSize} -> ${OUT}`);
