// The Chat tab's model process (forked by chat.ts): loads the model with the arguments the board
// checked, then answers one conversation at a time, streaming text pieces over IPC. Generation
// goes one model step per turn of the event loop (the API server's scheduler idea), so a "stop"
// message ends a reply between two tokens and frees its KV cache. The prompt and answer must fit
// the model's context, as in `lmf api` (prepareChat). Kept out of the board's process so loading
// a model never blocks the page and unloading returns all its memory.
import { UserError, isUserError } from "../errors.ts";
import { type ArgsInput, parseInferArgs } from "../hparams/index.ts";
import { type ChatRequest, ApiError, parseChatRequest } from "../infer/api/protocol.ts";
import { prepareChat, streamChat } from "../infer/api/completions.ts";
import { generationSettingsFromArgs, loadChatModelFromArgs } from "../infer/from_args.ts";
import type { ChatModel } from "../infer/chat_model.ts";

export type ToWorker =
  | { type: "load"; input: ArgsInput }
  | { type: "chat"; id: number; messages: unknown; system: string; generation: Record<string, unknown> }
  | { type: "stop"; id: number };

export type FromWorker =
  | { type: "loaded"; context: number }
  | { type: "load-error"; message: string }
  | { type: "piece"; id: number; text: string }
  | { type: "done"; id: number; finishReason: string; completionTokens: number }
  | { type: "chat-error"; id: number; message: string };

/** Seconds one reply may generate for. */
const REPLY_SECONDS = 600;

/** The generation settings each GeneratingArguments key sets; keys a message leaves out keep the loaded defaults. */
const SETTING_OF: Record<string, keyof ReturnType<typeof generationSettingsFromArgs>> = {
  do_sample: "doSample",
  temperature: "temperature",
  top_p: "topP",
  top_k: "topK",
  num_beams: "numBeams",
  max_length: "maxLength",
  max_new_tokens: "maxNewTokens",
  repetition_penalty: "repetitionPenalty",
  length_penalty: "lengthPenalty",
};

let chat: ChatModel | null = null;
let loadInput: ArgsInput = {};
const stopped = new Set<number>();

const send = (message: FromWorker) => process.send!(message);
const describe = (error: unknown) => (isUserError(error) || error instanceof ApiError ? error.message : `unexpected error: ${(error as Error)?.stack ?? String(error)}`);

/** The load arguments with this message's generation settings on top, parsed as `lmf chat` parses them. */
function argsWith(generation: Record<string, unknown>) {
  if (Array.isArray(loadInput)) return parseInferArgs([...loadInput, ...Object.entries(generation).map(([key, value]) => `${key}=${String(value)}`)], { onWarning: () => undefined });
  return parseInferArgs({ ...(loadInput as Record<string, unknown>), ...generation }, { onWarning: () => undefined });
}

async function reply(id: number, messages: unknown, system: string, generation: Record<string, unknown>): Promise<void> {
  const args = argsWith(generation);
  const list = Array.isArray(messages) ? messages : [];
  const all = generationSettingsFromArgs(args.generating);
  const settings = Object.fromEntries(Object.keys(generation).filter((key) => SETTING_OF[key]).map((key) => [SETTING_OF[key], all[SETTING_OF[key]!]]));
  if ("skip_special_tokens" in generation && generation.skip_special_tokens !== chat!.skipSpecialTokens) {
    throw new UserError("skip_special_tokens is set when the model loads", "skip_special_tokens", "load the model again to change it");
  }
  // Without max_new_tokens the answer may use the context the prompt leaves (as `lmf api` without max_tokens).
  const request: ChatRequest = {
    ...parseChatRequest({ model: "board", messages: system ? [{ role: "system", content: system }, ...list] : list, stream: true }),
    settings,
  };
  const prepared = prepareChat(chat!, request, { maxTime: REPLY_SECONDS, timeOrigin: Date.now() });
  const pieces = streamChat(chat!, request, prepared);
  try {
    for (let step = pieces.next(); ; step = pieces.next()) {
      if (step.done) {
        send({ type: "done", id, finishReason: step.value.finishReason, completionTokens: step.value.usage.completion_tokens });
        return;
      }
      if (step.value) send({ type: "piece", id, text: step.value });
      // One step per turn of the event loop: a stop message is read between two tokens.
      await new Promise((resolve) => setImmediate(resolve));
      if (stopped.has(id)) {
        send({ type: "done", id, finishReason: "stopped", completionTokens: -1 });
        return;
      }
    }
  } finally {
    pieces.return({ finishReason: "stop", usage: { prompt_tokens: 0, completion_tokens: 0, total_tokens: 0 } });
    stopped.delete(id);
  }
}

process.on("message", (message: ToWorker) => {
  if (message.type === "load") {
    try {
      loadInput = message.input;
      chat = loadChatModelFromArgs(parseInferArgs(message.input, { onWarning: () => undefined, command: "chat" }));
      send({ type: "loaded", context: chat.contextLength });
    } catch (error) {
      send({ type: "load-error", message: describe(error) });
    }
  } else if (message.type === "chat") {
    if (!chat) return send({ type: "chat-error", id: message.id, message: "no model is loaded" });
    reply(message.id, message.messages, message.system, message.generation).catch((error: unknown) => send({ type: "chat-error", id: message.id, message: describe(error) }));
  } else if (message.type === "stop") {
    stopped.add(message.id);
  }
});

// The board closed its end: nothing more to serve.
process.on("disconnect", () => process.exit(0));
