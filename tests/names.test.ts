// "Did you mean": edit distance and the closest known name.
import { test } from "node:test";
import assert from "node:assert/strict";
import { closestName, editDistance } from "../src/names.ts";

test("edit distance and closest names", () => {
  assert.equal(editDistance("kitten", "sitting"), 3);
  assert.equal(editDistance("", "abc"), 3);
  assert.equal(closestName("lora_rnak", ["lora_rank", "lora_alpha"]), "lora_rank");
  assert.equal(closestName("rank", ["lora_rank", "galore_rank", "cutoff_len"]), "lora_rank");
  assert.equal(closestName("zzzzzzzz", ["lora_rank"]), null);
});
