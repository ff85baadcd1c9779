// `lmf completion bash|zsh`: generated from the parameter declarations, and working in bash: commands,
// `--key` and `key=` for each job's keys, a key's choices after it, `key=value` with bash's default
// word breaks; an unknown shell is refused.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { isUserError } from "../../src/errors.ts";
import { commandGroups, groupByKey } from "../../src/hparams/index.ts";
import { completionScript } from "../../src/terminal/completion.ts";

const COMMANDS = ["train", "chat", "api", "eval", "export", "webui", "data", "llama-pro", "setup", "completion", "env", "version", "help"];

/** COMPREPLY for a command line, as bash's programmable completion calls _lmf (words split at spaces and '='). */
function complete(script: string, line: string): string[] {
  const file = join(mkdtempSync(join(tmpdir(), "lmf-completion-")), "lmf.bash");
  writeFileSync(file, script);
  const program = `
    source ${JSON.stringify(file)}
    COMP_LINE=${JSON.stringify(line)}; COMP_POINT=\${#COMP_LINE}
    IFS=' ' read -ra COMP_WORDS <<< "\${COMP_LINE//=/ = }"
    [[ "$COMP_LINE" == *" " || "$COMP_LINE" == *= ]] && COMP_WORDS+=("")
    COMP_CWORD=$(( \${#COMP_WORDS[@]} - 1 ))
    _lmf
    printf '%s\\n' "\${COMPREPLY[@]}"`;
  const result = spawnSync("bash", ["-c", program], { encoding: "utf8" });
  assert.equal(result.status, 0, result.stderr);
  return result.stdout.split("\n").filter(Boolean);
}

test("the bash script completes commands, keys, choices and key=value from the declarations", { skip: spawnSync("bash", ["--version"]).status !== 0 && "no bash" }, () => {
  const script = completionScript("bash", COMMANDS);
  assert.deepEqual(complete(script, "lmf tr"), ["train"]);
  assert.deepEqual(complete(script, "lmf c").sort(), ["chat", "completion"]);
  assert.deepEqual(complete(script, "lmf train --finetuning_t"), ["--finetuning_type"]);
  const stage = groupByKey("finetuning").fields.stage!;
  assert.deepEqual(complete(script, "lmf train --stage "), stage.choices!.map(String));
  assert.deepEqual(complete(script, "lmf train --do_train "), ["true", "false"]);
  assert.deepEqual(complete(script, "lmf train stage=s"), ["sft"]);
  assert.deepEqual(complete(script, "lmf train lora_ra"), ["lora_rank="]);
  assert.deepEqual(complete(script, "lmf completion "), ["bash", "zsh"]);
  // eval's keys are eval's: task is one, learning_rate (training) is not.
  assert.deepEqual(complete(script, "lmf eval --tas"), ["--task", "--task_dir"]);
  assert.deepEqual(complete(script, "lmf eval --learning_r"), []);
});

test("every key a job reads is in its list; derived keys are not", () => {
  const script = completionScript("bash", COMMANDS);
  for (const command of ["train", "chat", "eval"] as const) {
    const listed = new Set(new RegExp(`^_lmf_keys_${command}='([^']*)'$`, "m").exec(script)![1]!.split(" "));
    for (const group of commandGroups[command]) {
      for (const [name, spec] of Object.entries(groupByKey(group).fields)) assert.equal(listed.has(name), !spec.derived, `${command}: ${name}`);
    }
  }
  const zsh = completionScript("zsh", COMMANDS);
  assert.match(zsh, /^#compdef lmf\n/);
  assert.match(zsh, /bashcompinit/);
  assert.throws(() => completionScript("fish", COMMANDS), (error) => isUserError(error) && /lmf completion bash/.test(error.message));
});
