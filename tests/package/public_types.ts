// Compile-only check of the public types, as a project that installed lmfactory sees them: the
// repo's typecheck compiles it against src/, tests/package/packed.test.ts against the packed
// package's declarations (imports rewritten to "lmfactory" and "lmfactory/torch"). Never run.
import { ChatModel, type ChatResponse, type EvalResult, type InferArgs, type TrainArgs, UserError, evaluate, exportModel, parseArgs, runExp, train, version } from "../../src/index.ts";
import { type Tensor, tensor, tidy } from "../../src/torch/index.ts";

export async function publicTypes(): Promise<void> {
  const args: TrainArgs = parseArgs({ model_name_or_path: "m", stage: "sft", lora_target: "q_proj,v_proj", lora_rank: 8 });
  const learningRate: number = args.training.learning_rate;
  const targets: string[] = args.finetuning.lora_target;
  // @ts-expect-error a misspelt key is a compile error
  parseArgs({ lora_rnak: 8 });
  // @ts-expect-error a value of the wrong type
  await runExp({ learning_rate: "fast" });
  await train(["cfg.yaml", "lora_rank=16"], { print: (line: string) => void line });

  const infer: InferArgs = parseArgs("chat.yaml", "chat");
  // @ts-expect-error chat arguments have no training group
  void infer.training;
  const chat = await ChatModel.load({ model_name_or_path: "m", template: "chatml", max_new_tokens: 8 });
  const responses: ChatResponse[] = chat.chat([{ role: "user", content: "hi" }], { maxNewTokens: 8, temperature: 0.7, system: "be brief" });
  const text: string = responses[0]!.responseText;
  // @ts-expect-error roles are the template's: system, user, assistant, observation, function
  chat.chat([{ role: "robot", content: "hi" }]);
  const pieces: Generator<string> = chat.streamChat([{ role: "user", content: "hi" }]);
  chat.dispose();

  const folder: string = await exportModel({ model_name_or_path: "m", adapter_name_or_path: "a", export_dir: "out", export_size: 2 });
  // @ts-expect-error export takes no training keys
  await exportModel({ model_name_or_path: "m", export_dir: "out", learning_rate: 1e-4 });
  void folder;
  const result: EvalResult = await evaluate({ model_name_or_path: "m", task: "mmlu_test" });
  const average: number | undefined = result.categoryAccuracy["Average"];
  const error: Error = new UserError("what", "where", "fix");
  const name: string = version;

  const sum: number = tidy(() => tensor([1, 2, 3]).sum().item());
  const t: Tensor = tensor([[1, 2]], { dtype: "float32" });
  void [learningRate, targets, text, pieces, average, error, name, sum, t];
}
