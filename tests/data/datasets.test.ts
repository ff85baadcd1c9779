// dataset_info.json, the alpaca / sharegpt / openai aligners against LLaMA-Factory's converter
// outputs, bad-row reports (stop or skip), path datasets, and loadDatasets end to end on fixtures.
import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { describe, test } from "node:test";
import { UserError } from "../../src/errors.ts";
import { alignRow, type AlignSpec } from "../../src/data/aligner.ts";
import { loadDatasets } from "../../src/data/dataset.ts";
import { ALPACA_COLUMNS, getDatasetAttrs, parseEntry, SHAREGPT_TAGS } from "../../src/data/registry.ts";
import type { AlignedExample } from "../../src/data/types.ts";

const alpaca: AlignSpec = { formatting: "alpaca", ranking: false, columns: { ...ALPACA_COLUMNS }, tags: { ...SHAREGPT_TAGS } };
const sharegpt: AlignSpec = { formatting: "sharegpt", ranking: false, columns: { ...ALPACA_COLUMNS, messages: "conversations" }, tags: { ...SHAREGPT_TAGS } };

function aligned(data: unknown, spec: AlignSpec): AlignedExample {
  const result = alignRow(data, spec);
  if (!("example" in result)) assert.fail(`unexpected bad row: ${result.problem}`);
  return result.example;
}
function problem(data: unknown, spec: AlignSpec): string {
  const result = alignRow(data, spec);
  if ("example" in result) assert.fail("expected a bad row");
  return result.problem;
}
const u = (content: string) => ({ role: "user", content });
const a = (content: string) => ({ role: "assistant", content });

describe("alpaca", () => {
  test("instruction and input join with a newline; history becomes turns; system and tools", () => {
    const spec: AlignSpec = { ...alpaca, columns: { ...ALPACA_COLUMNS, history: "history", system: "system", tools: "tools" } };
    const example = aligned({ instruction: "Translate", input: "chat", output: "cat", history: [["hi", "hello"]], system: "Be brief.", tools: [{ name: "f" }] }, spec);
    assert.deepEqual(example, { _prompt: [u("hi"), a("hello"), u("Translate\nchat")], _response: [a("cat")], _system: "Be brief.", _tools: '[{"name":"f"}]' });
    assert.deepEqual(aligned({ instruction: "Only", input: "", output: "x" }, alpaca)._prompt, [u("Only")]);
  });

  test("ranking gives [chosen, rejected]; kto_tag gives [answer, ''] or ['', answer]", () => {
    const ranking: AlignSpec = { ...alpaca, ranking: true, columns: { ...ALPACA_COLUMNS, response: null, chosen: "chosen", rejected: "rejected" } };
    assert.deepEqual(aligned({ instruction: "q", chosen: "good", rejected: "bad" }, ranking)._response, [a("good"), a("bad")]);
    const kto: AlignSpec = { ...alpaca, columns: { ...ALPACA_COLUMNS, kto_tag: "label" } };
    const good = aligned({ instruction: "q", output: "yes", label: true }, kto);
    assert.deepEqual([good._response, good._kto_tag], [[a("yes"), a("")], true]);
    assert.deepEqual(aligned({ instruction: "q", output: "no", label: "false" }, kto)._response, [a(""), a("no")]);
  });

  test("a prompt-only mapping is unsupervised (pre-training text)", () => {
    const text: AlignSpec = { ...alpaca, columns: { ...ALPACA_COLUMNS, prompt: "text", query: null, response: null } };
    assert.deepEqual(aligned({ text: "Once upon a time." }, text), { _prompt: [u("Once upon a time.")], _response: [], _system: "", _tools: "" });
  });

  test("bad rows: missing column, empty response, non-string content, not an object", () => {
    assert.match(problem({ instruction: "q" }, alpaca), /missing column "output"/);
    assert.match(problem({ input: "x", output: "y" }, alpaca), /missing column "instruction"/);
    assert.match(problem({ instruction: "q", output: "  " }, alpaca), /empty response/);
    assert.match(problem({ instruction: 3, output: "y" }, alpaca), /not a string/);
    assert.match(problem({ instruction: "", input: "", output: "y" }, alpaca), /empty prompt/);
    assert.match(problem(["a"], alpaca), /not an object/);
    assert.match(problem({ instruction: "q", output: "a", label: 1 }, { ...alpaca, columns: { ...ALPACA_COLUMNS, kto_tag: "label" } }), /KTO label/);
  });
});

describe("sharegpt", () => {
  const conversation = [
    { from: "system", value: "Sys" },
    { from: "human", value: "What is the weather?" },
    { from: "function_call", value: '{"name": "weather"}' },
    { from: "observation", value: "sunny" },
    { from: "gpt", value: "It is sunny." },
  ];

  test("a leading system message, tool turns and the last answer", () => {
    const example = aligned({ conversations: conversation, tools: "[]" }, { ...sharegpt, columns: { ...sharegpt.columns, tools: "tools" } });
    assert.deepEqual(example, {
      _prompt: [u("What is the weather?"), { role: "function", content: '{"name": "weather"}' }, { role: "observation", content: "sunny" }],
      _response: [a("It is sunny.")],
      _system: "Sys",
      _tools: "[]",
    });
  });

  test("custom tags (role/content, user/assistant) and a system column", () => {
    const spec: AlignSpec = {
      ...sharegpt,
      columns: { ...sharegpt.columns, messages: "messages", system: "sys" },
      tags: { ...SHAREGPT_TAGS, role_tag: "role", content_tag: "content", user_tag: "user", assistant_tag: "assistant" },
    };
    const example = aligned({ messages: [{ role: "user", content: "hi" }, { role: "assistant", content: "yo" }], sys: "S" }, spec);
    assert.deepEqual(example, { _prompt: [u("hi")], _response: [a("yo")], _system: "S", _tools: "" });
  });

  test("ranking: the prompt ends with a question, chosen/rejected are message objects", () => {
    const spec: AlignSpec = { ...sharegpt, ranking: true, columns: { ...sharegpt.columns, chosen: "chosen", rejected: "rejected" } };
    const example = aligned({ conversations: [{ from: "human", value: "q" }], chosen: { from: "gpt", value: "good" }, rejected: { from: "gpt", value: "bad" } }, spec);
    assert.deepEqual([example._prompt, example._response], [[u("q")], [a("good"), a("bad")]]);
    assert.match(problem({ conversations: [{ from: "human", value: "q" }], chosen: { from: "human", value: "x" }, rejected: { from: "gpt", value: "y" } }, spec), /chosen answer has role/);
  });

  test("kto on the last message", () => {
    const spec: AlignSpec = { ...sharegpt, columns: { ...sharegpt.columns, kto_tag: "label" } };
    const example = aligned({ conversations: [{ from: "human", value: "q" }, { from: "gpt", value: "meh" }], label: false }, spec);
    assert.deepEqual([example._prompt, example._response, example._kto_tag], [[u("q")], [a(""), a("meh")], false]);
  });

  test("bad rows: wrong role order, unknown role, odd count, empty answer, non-string content, missing column", () => {
    assert.match(problem({ conversations: [{ from: "gpt", value: "a" }, { from: "human", value: "q" }] }, sharegpt), /wrong role order: message 1 is a assistant turn/);
    assert.match(problem({ conversations: [{ from: "human", value: "q" }] }, sharegpt), /ends with a question/);
    assert.match(problem({ conversations: [{ from: "bot", value: "q" }] }, sharegpt), /unknown role "bot"/);
    assert.match(problem({ conversations: [{ from: "human", value: "q" }, { from: "gpt", value: "" }] }, sharegpt), /empty answer/);
    assert.match(problem({ conversations: [{ from: "human", value: ["q"] }, { from: "gpt", value: "a" }] }, sharegpt), /content is a list/);
    assert.match(problem({ messages: [] }, sharegpt), /missing column "conversations"/);
    assert.match(problem({ conversations: [] }, sharegpt), /empty conversation/);
    assert.match(problem({ conversations: [{ from: "human", value: "q" }, { from: "system", value: "s" }] }, sharegpt), /wrong role order: message 2 is a system turn/);
  });
});

test("openai: tool_calls become a function turn, tool results merge, the 'detailed thinking off' suffix", () => {
  const entry = parseEntry("oa", { file_name: "x.json", formatting: "openai", columns: { messages: "messages", tools: "tools" } }, "/d");
  const spec: AlignSpec = { formatting: "openai", ranking: false, columns: entry.columns, tags: entry.tags };
  const example = aligned(
    {
      messages: [
        { role: "user", content: "2 cities?" },
        { role: "assistant", content: "", tool_calls: [{ type: "function", function: { name: "w", arguments: "{}" } }] },
        { role: "tool", content: "a" },
        { role: "tool", content: "b" },
        { role: "assistant", content: "done" },
      ],
      tools: [{ name: "w" }],
    },
    spec,
  );
  assert.deepEqual(example._prompt, [u("2 cities?"), { role: "function", content: '[{"name":"w","arguments":"{}"}]' }, { role: "observation", content: "a\n</tool_response>\n<tool_response>\nb" }]);
  assert.equal(example._system, "");
  assert.equal(example._tools, '[{"name":"w"}]');
  assert.equal(aligned({ messages: [u("q"), a("r")] }, spec)._system, "detailed thinking off");
  assert.equal(aligned({ messages: [{ role: "system", content: "S" }, u("q"), a("r")] }, spec)._system, "S\ndetailed thinking off");
});

describe("dataset_info.json", () => {
  test("defaults, columns (unnamed ones absent), tags, and clear errors", () => {
    const plain = parseEntry("p", { file_name: "a.json" }, "/d");
    assert.deepEqual([plain.path, plain.formatting, plain.columns.prompt, plain.columns.response], ["/d/a.json", "alpaca", "instruction", "output"]);
    const text = parseEntry("t", { file_name: "c.jsonl", columns: { prompt: "text" } }, "/d");
    assert.deepEqual([text.columns.prompt, text.columns.query, text.columns.response], ["text", null, null]);
    const chat = parseEntry("s", { file_name: "s.json", formatting: "sharegpt", tags: { role_tag: "role" } }, "/d");
    assert.deepEqual([chat.columns.messages, chat.tags.role_tag, chat.tags.content_tag], ["conversations", "role", "value"]);
    assert.throws(() => parseEntry("h", { hf_hub_url: "org/data" }, "/d"), /not reachable here.*download it/s);
    assert.throws(() => parseEntry("x", { file_name: "a.json", colums: {} }, "/d"), /unknown key "colums" \(did you mean "columns"\?\)/);
    assert.throws(() => parseEntry("x", { file_name: "a.json", formatting: "chatml" }, "/d"), /unknown formatting/);
  });

  test("unknown names suggest the closest; a path works without an entry", () => {
    const dir = mkdtempSync(join(tmpdir(), "lmf-info-"));
    writeFileSync(join(dir, "dataset_info.json"), JSON.stringify({ alpaca_demo: { file_name: "a.json" } }));
    writeFileSync(join(dir, "loose.jsonl"), '{"text": "x"}\n');
    assert.throws(() => getDatasetAttrs(["alpaca_dem"], dir), (error: unknown) => error instanceof UserError && /did you mean "alpaca_demo"/.test(error.message));
    const [attr] = getDatasetAttrs([join(dir, "loose.jsonl")], dir);
    assert.equal(attr!.formatting, "auto");
    assert.equal(getDatasetAttrs(["loose.jsonl"], dir)[0]!.path, join(dir, "loose.jsonl"));
    assert.throws(() => getDatasetAttrs(["nothing"], join(dir, "nowhere")), /does not exist/);
  });
});

describe("loadDatasets", () => {
  const dir = mkdtempSync(join(tmpdir(), "lmf-datasets-"));
  const rows = (n: number, tag: string) => Array.from({ length: n }, (_, index) => ({ instruction: `${tag} q${index}`, input: "", output: `${tag} a${index}` }));
  writeFileSync(join(dir, "a.json"), JSON.stringify(rows(10, "A")));
  writeFileSync(join(dir, "b.jsonl"), rows(4, "B").map((row) => JSON.stringify(row)).join("\n"));
  writeFileSync(join(dir, "bad.json"), JSON.stringify([...rows(2, "C"), { instruction: "q", output: "" }, { instruction: "q" }, ...rows(1, "D")]));
  writeFileSync(join(dir, "pairs.json"), JSON.stringify([{ conversations: [{ from: "human", value: "q" }], chosen: { from: "gpt", value: "y" }, rejected: { from: "gpt", value: "n" } }]));
  writeFileSync(join(dir, "corpus.txt"), "doc one\ndoc two\n");
  mkdirSync(join(dir, "shards"));
  writeFileSync(join(dir, "shards", "1.csv"), "instruction,output\nx,y\n");
  writeFileSync(join(dir, "shards", "2.csv"), "instruction,output\nz,w\n");
  writeFileSync(
    join(dir, "dataset_info.json"),
    JSON.stringify({
      a: { file_name: "a.json" },
      b: { file_name: "b.jsonl", num_samples: 6 },
      bad: { file_name: "bad.json" },
      pairs: { file_name: "pairs.json", formatting: "sharegpt", ranking: true, columns: { messages: "conversations", chosen: "chosen", rejected: "rejected" } },
      corpus: { file_name: "corpus.txt", columns: { prompt: "text" } },
      shards: { file_name: "shards" },
    }),
  );
  const base = { datasetDir: dir, seed: 7 };
  const firstPrompt = (example: AlignedExample) => example._prompt[0]!.content;

  test("concat, max_samples per dataset, num_samples resampling, folders and text", async () => {
    const { train, eval: evalSet } = await loadDatasets({ ...base, datasetNames: ["a", "b"], maxSamples: 3 });
    assert.equal(evalSet, null);
    assert.deepEqual(train!.map(firstPrompt), ["A q0", "A q1", "A q2", ...train!.slice(3).map(firstPrompt)]);
    assert.equal(train!.length, 6);
    const resampled = (await loadDatasets({ ...base, datasetNames: ["b"] })).train!;
    assert.equal(resampled.length, 6);
    assert.deepEqual(new Set(resampled.map(firstPrompt)), new Set(["B q0", "B q1", "B q2", "B q3"]));
    assert.deepEqual((await loadDatasets({ ...base, datasetNames: ["shards"] })).train!.map(firstPrompt), ["x", "z"]);
    assert.deepEqual((await loadDatasets({ ...base, datasetNames: ["corpus"] })).train, [
      { _prompt: [u("doc one")], _response: [], _system: "", _tools: "" },
      { _prompt: [u("doc two")], _response: [], _system: "", _tools: "" },
    ]);
  });

  test("a bad row stops with file, row and fix; skipBadRows counts and reports", async () => {
    await assert.rejects(loadDatasets({ ...base, datasetNames: ["bad"] }), (error: unknown) => {
      assert.ok(error instanceof UserError);
      assert.match(error.message, /bad\.json row 3/);
      assert.match(error.message, /empty response/);
      assert.match(error.message, /skip_bad_rows/);
      return true;
    });
    const messages: string[] = [];
    const loaded = await loadDatasets({ ...base, datasetNames: ["bad"], skipBadRows: true, log: (message) => messages.push(message) });
    assert.deepEqual(loaded.train!.map(firstPrompt), ["C q0", "C q1", "D q0"]);
    assert.equal(loaded.badRows.count, 2);
    assert.match(loaded.badRows.summary(), /skipped 2 bad rows.*row 3.*row 4/);
    assert.ok(messages.some((message) => message.includes("skipped 2 bad rows")));
  });

  test("val_size as a fraction and as a count, seeded", async () => {
    const fraction = await loadDatasets({ ...base, datasetNames: ["a"], valSize: 0.25 });
    assert.deepEqual([fraction.train!.length, fraction.eval!.length], [7, 3]);
    const again = await loadDatasets({ ...base, datasetNames: ["a"], valSize: 0.25 });
    assert.deepEqual(again.eval, fraction.eval);
    const count = await loadDatasets({ ...base, datasetNames: ["a"], valSize: 4 });
    assert.deepEqual([count.train!.length, count.eval!.length], [6, 4]);
    assert.deepEqual(new Set([...count.train!, ...count.eval!].map(firstPrompt)).size, 10);
    await assert.rejects(loadDatasets({ ...base, datasetNames: ["a"], valSize: 10 }), /leaving none to train on/);
  });

  test("interleave_under stops at the shortest dataset; interleave_over cycles to the longest", async () => {
    const under = await loadDatasets({ ...base, datasetNames: ["a", "shards"], mixStrategy: "interleave_under" });
    assert.deepEqual(under.train!.map(firstPrompt), ["A q0", "x", "A q1", "z"]);
    const over = await loadDatasets({ ...base, datasetNames: ["a", "shards"], mixStrategy: "interleave_over" });
    assert.equal(over.train!.length, 20);
  });

  test("stage and ranking must agree; path datasets are recognised; option rules", async () => {
    await assert.rejects(loadDatasets({ ...base, datasetNames: ["pairs"], stage: "sft" }), /not applicable in the sft stage/);
    await assert.rejects(loadDatasets({ ...base, datasetNames: ["a"], stage: "dpo" }), /dpo needs a ranking/);
    await assert.rejects(loadDatasets({ ...base, datasetNames: ["pairs"], stage: "kto" }), /not applicable in the kto stage: it is a ranking/);
    await assert.rejects(loadDatasets({ ...base, datasetNames: ["a"], stage: "kto" }), /kto needs answers tagged desirable or not/);
    const demo = fileURLToPath(new URL("../../data", import.meta.url));
    await assert.rejects(loadDatasets({ datasetNames: ["kto_en_demo"], datasetDir: demo, stage: "sft" }), /it is a KTO dataset/);
    assert.equal((await loadDatasets({ datasetNames: ["kto_en_demo"], datasetDir: demo, stage: "kto" })).train!.length, 6);
    assert.equal((await loadDatasets({ ...base, datasetNames: ["pairs"], stage: "dpo" })).train!.length, 1);
    const byPath = await loadDatasets({ ...base, datasetNames: [join(dir, "pairs.json")], stage: "rm" });
    assert.deepEqual(byPath.train![0]!._response, [a("y"), a("n")]);
    await assert.rejects(loadDatasets({ ...base, datasetNames: ["a"], streaming: true, valSize: 0.1 }), /integer val size/);
    await assert.rejects(loadDatasets({ ...base, datasetNames: ["a"], streaming: true, maxSamples: 2 }), /incompatible with streaming/);
    await assert.rejects(loadDatasets({ ...base, datasetNames: ["a"], interleaveProbs: [1] }), /only valid for interleaved/);
    await assert.rejects(loadDatasets({ ...base, datasetNames: ["a"], split: "test" }), /only the "train" split/);
  });

  test("streaming: shuffled with a buffer, integer val_size taken first, re-iterable and reproducible", async () => {
    const streamed = await loadDatasets({ ...base, datasetNames: ["a", "b"], streaming: true, bufferSize: 4, valSize: 3 });
    const collect = async (stream: AsyncIterable<AlignedExample>) => {
      const out: string[] = [];
      for await (const example of stream) out.push(firstPrompt(example));
      return out;
    };
    const evalPrompts = await collect(streamed.eval!);
    const trainPrompts = await collect(streamed.train!);
    assert.equal(evalPrompts.length, 3);
    assert.equal(trainPrompts.length, 11);
    assert.deepEqual(new Set([...evalPrompts, ...trainPrompts]).size, 14);
    assert.notDeepEqual([...evalPrompts, ...trainPrompts], [...rows(10, "A"), ...rows(4, "B")].map((row) => row.instruction));
    assert.deepEqual(await collect(streamed.train!), trainPrompts);
  });
});

test("the built-in demo datasets in data/ all load; hub entries explain how to get the data", async () => {
  const dataDir = fileURLToPath(new URL("../../data", import.meta.url));
  const info = JSON.parse(readFileSync(join(dataDir, "dataset_info.json"), "utf8")) as Record<string, { file_name?: string; ranking?: boolean; columns?: { kto_tag?: string } }>;
  const local = Object.entries(info).filter(([, entry]) => entry.file_name);
  assert.ok(local.length >= 8);
  for (const [name, entry] of local) {
    const stage = entry.ranking ? "dpo" : entry.columns?.kto_tag ? "kto" : "sft";
    const { train } = await loadDatasets({ datasetNames: [name], datasetDir: dataDir, stage });
    assert.ok(train!.length > 0, name);
  }
  const kto = (await loadDatasets({ datasetNames: ["kto_en_demo"], datasetDir: dataDir })).train!;
  assert.deepEqual(kto.map((example) => example._kto_tag), [true, false, true, false, true, false]);
  const tools = (await loadDatasets({ datasetNames: ["glaive_toolcall_en_demo"], datasetDir: dataDir })).train!;
  assert.ok(tools[0]!._tools.includes("get_weather"));
  assert.equal(tools[3]!._system, "You are a concise travel assistant.");
  await assert.rejects(loadDatasets({ datasetNames: ["alpaca_en"], datasetDir: dataDir }), /hf_hub_url "llamafactory\/alpaca_en", which is not reachable here/);
});
